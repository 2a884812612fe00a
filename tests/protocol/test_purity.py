import subprocess
import sys

FORBIDDEN = ["trio", "libp2p", "docker", "boto3", "botocore", "yaml", "socket", "asyncio"]


def test_importing_protocol_pulls_in_no_io_library():
    code = (
        "import sys\n"
        "import protocol, protocol.codec, protocol.envelope, protocol.messages, "
        "protocol.states, protocol.identity, protocol.jobspec, protocol.uris, "
        "protocol.selectors, protocol.quantities, protocol.placeholders, "
        "protocol.spec_values, protocol.spec_parser, protocol.examples\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_importing_the_decision_core_pulls_in_no_io_library():
    code = (
        "import sys\n"
        "import node.core, node.core.events, node.core.requester, node.core.compute\n"
        f"print(sorted(m for m in {FORBIDDEN + ['sqlite3', 'node.store', 'node.mesh']!r} "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


#: What the decision core may import: the protocol, itself, and pure parts of the stdlib.
#: No clock (time, datetime), no randomness (random, uuid, secrets), no files or sockets.
CORE_ALLOWED = {"__future__", "collections", "collections.abc", "dataclasses", "hashlib",
                "typing", "enum"}


def test_the_decision_core_imports_nothing_that_reads_a_clock_or_a_random_source():
    import ast
    from pathlib import Path

    core = Path(__file__).resolve().parents[2] / "node" / "core"
    sources = sorted(core.glob("*.py"))
    assert len(sources) >= 4
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." if node.level else node.module or ""]
            else:
                continue
            for name in names:
                assert name == "." or name.startswith("protocol") or name in CORE_ALLOWED, (
                    f"{source.name} imports {name}")
