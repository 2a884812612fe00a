"""scripts/bacnode.service: systemd accepts it, and its own command lines start, reload
and stop a real daemon.

PID 1 here is no systemd, so the unit cannot be started for real. Instead
``systemd-analyze verify`` checks it as systemd would load it, and the test runs the
unit's ``ExecStart`` and ``ExecReload`` as written, with only the installation paths
(binary, data dir, config file) mapped into a temporary directory.
"""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts.daemons import REPO_ROOT, free_ports, popen, wait_until

pytestmark = pytest.mark.integration

UNIT = REPO_ROOT / "scripts" / "bacnode.service"
INSTALLED_BINARY = "/opt/bacnode/venv/bin/bacnode"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def _bacnode_binary() -> str:
    return str(Path(sys.executable).with_name("bacnode"))


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    systemd_analyze = shutil.which("systemd-analyze")
    assert systemd_analyze, "systemd-analyze is missing (scripts/setup.sh installs systemd)"
    unit = tmp_path / "bacnode.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, _bacnode_binary()))
    checked = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True,
                             text=True, timeout=60, check=False)
    # verify exits 0 on some problems (an unknown signal name, say) and only warns.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), checked.stderr
    service = _unit()["Service"]
    assert service["StateDirectory"] == "bacnode"  # /var/lib/bacnode
    assert service["ConfigurationDirectory"] == "bacnode"  # /etc/bacnode
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


def _ready(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/readyz", timeout=5) as answer:
            return json.loads(answer.read())["Ready"] is True
    except (OSError, ValueError):
        return False


@pytest.mark.usefixtures("docker_client")  # ready means dockerd answers, too
def test_the_units_command_lines_start_reload_and_stop_a_node(tmp_path: Path) -> None:
    service = _unit()["Service"]
    data_dir, config = tmp_path / "var-lib-bacnode", tmp_path / "etc-bacnode" / "config.yaml"
    config.parent.mkdir()
    listen_port, api_port = free_ports(2)
    settings = (f"listen: /ip4/127.0.0.1/tcp/{listen_port}\napi_port: {api_port}\n"
                "peers: none\nmdns: false\n")
    config.write_text(settings + "labels:\n  site: lab\n")
    command = (service["ExecStart"].replace(INSTALLED_BINARY, _bacnode_binary())
               .replace("/var/lib/bacnode", str(data_dir))
               .replace("/etc/bacnode/config.yaml", str(config)))
    with open(tmp_path / "stderr", "wb") as stderr:
        process = popen(shlex.split(command), stdout=subprocess.DEVNULL, stderr=stderr)
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: _ready(api), timeout=60, what="the service's node to be ready")
        config.write_text(settings + "labels:\n  site: lab\n  rack: r7\n")
        reload = service["ExecReload"].replace("$MAINPID", str(process.pid))
        subprocess.run(shlex.split(reload), check=True, timeout=10)

        def labels() -> dict[str, str]:
            with urllib.request.urlopen(f"{api}/api/v1/agent/node", timeout=5) as answer:
                return json.loads(answer.read())["Labels"]

        wait_until(lambda: labels() == {"site": "lab", "rack": "r7"}, timeout=15,
                   what="the reload to take the new labels")
        assert service["KillSignal"] == "SIGTERM"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=float(service["TimeoutStopSec"])) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (data_dir / "node.key").exists() and (data_dir / "state.db").exists()
