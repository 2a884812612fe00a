"""JSON logs: every line on stderr is one JSON object, whatever wrote it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_warnings_and_exceptions_python_cannot_raise_are_json_lines_too() -> None:
    """Python prints a warning, or an exception raised in a finaliser, to stderr itself:
    a line that broke a JSON log for whoever parses it."""
    program = textwrap.dedent("""
        import gc, logging, warnings
        from node.logs import configure_logging
        configure_logging("info", "json")

        class Finalised:
            def __del__(self):
                raise ValueError("raised while being collected")

        Finalised()
        gc.collect()
        warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)
        logging.getLogger("bacnode.test").info("and an ordinary record")
    """)
    done = subprocess.run([sys.executable, "-W", "always", "-c", program], capture_output=True,
                          text=True, timeout=60, check=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    messages = " | ".join(record["message"] for record in records)
    assert "Finalised" in messages and "a deprecated call" in messages, messages
    (unraisable,) = [r for r in records if "Finalised" in r["message"]]
    assert "raised while being collected" in unraisable["exception"]
    assert records[-1]["message"] == "and an ordinary record"


def test_py_libp2p_warnings_are_json_lines_and_keep_their_logger() -> None:
    """Importing py-libp2p cuts its loggers off from the root: its errors ("Failed to update
    the Certified-Addr-Book", seen in a daemon's JSON log) came out as bare lines."""
    program = textwrap.dedent("""
        import logging
        from node.logs import configure_logging
        configure_logging("info", "json")
        import libp2p.pubsub.utils  # as the daemon imports it, after logging is set up
        logging.getLogger("libp2p.pubsub.utils").error("Failed to update the Certified-Addr-Book")
        logging.getLogger("libp2p.pubsub.utils").info("below the level set for libraries")
    """)
    environment = {key: value for key, value in os.environ.items() if key != "LIBP2P_DEBUG"}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=True, env=environment)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert [(r["logger"], r["level"], r["message"]) for r in records] == [
        ("libp2p.pubsub.utils", "ERROR", "Failed to update the Certified-Addr-Book")]
