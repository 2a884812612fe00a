import json
import subprocess
import sys

import protocol


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=30
    )


def test_version_names_bacnode_protocol_python_and_libp2p():
    result = run_cli("version", "--output", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Version"] == protocol.__version__
    assert info["Protocol"] == "bacnode/1"
    assert info["Python"].count(".") == 2
    assert info["Libp2p"].startswith("0.8")


def test_cli_start_up_does_not_import_libp2p():
    code = "import sys, cli.main; print('libp2p' in sys.modules, 'docker' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False False"


def test_unknown_command_is_a_usage_error_not_a_traceback():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_wait_is_a_flag_that_also_takes_bacalhaus_equals_form():
    # A bare --wait must not take the image as its value (the tutorial writes it so).
    for wait in ("--wait", "--wait=false", "--wait=true", "--no-wait"):
        result = run_cli("docker", "run", "--dry-run", wait, "busybox", "--", "echo", "--wait=x")
        assert result.returncode == 0, (wait, result.stderr)
        assert "Image: busybox" in result.stdout
        assert "--wait=x" in result.stdout  # after --, it belongs to the container
    bad = run_cli("docker", "run", "--dry-run", "--wait=maybe", "busybox")
    assert bad.returncode == 2
    assert "'maybe' is not true or false" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_start_up_leaves_heavy_modules_to_the_commands_that_need_them():
    # Each of these cost 10-25 ms at every start; only some commands use them.
    heavy = ["cryptography", "protocol.jobspec", "protocol.unixfs", "importlib.metadata",
             "yaml", "urllib.request"]
    code = f"import sys, cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_submitting_a_spec_does_not_load_the_signature_library():
    """``job run`` and ``docker run`` parse the spec (CIDs in it too) before they submit;
    nothing of that signs or verifies, and libsodium's bindings cost ~10 ms a start."""
    spec = {"Type": "batch", "Tasks": [{
        "Name": "t", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
        "InputSources": [{"Source": {"Type": "ipfs", "Params": {
            "CID": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"}}, "Target": "/in"}]}]}
    code = ("import json, sys, cli.main\n"
            "from cli.jobs import check_spec\n"
            f"check_spec(json.loads({json.dumps(json.dumps(spec))}))\n"
            "print('nacl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
