import subprocess
import sys

FORBIDDEN = ["trio", "libp2p", "docker", "boto3", "botocore", "yaml", "socket", "asyncio"]


def test_importing_protocol_pulls_in_no_io_library():
    code = (
        "import sys\n"
        "import protocol, protocol.codec, protocol.envelope, protocol.messages, "
        "protocol.states, protocol.identity, protocol.jobspec, protocol.uris, "
        "protocol.selectors, protocol.quantities, protocol.placeholders\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
