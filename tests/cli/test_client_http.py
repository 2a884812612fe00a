"""The CLI's own HTTP/1.1 exchange for JSON requests (cli/client.py): every framing an
answer may come in, and answers that break off, as one-line errors."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from cli.client import ApiClient, ApiError, _read_response


def read(raw: bytes) -> tuple[int, str, bytes]:
    return _read_response(io.BufferedReader(io.BytesIO(raw)))  # type: ignore[arg-type]


def test_a_body_of_the_announced_length() -> None:
    raw = b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: x\r\n\r\n{"a": true}extra'
    assert read(raw) == (200, "OK", b'{"a": true}')


def test_a_chunked_body_with_extensions_and_trailers() -> None:
    raw = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;name=x\r\n{\"a\"\r\n6\r\n: 1}\r\n\r\n0\r\nX-Trailer: y\r\n\r\n")
    assert read(raw) == (201, "Created", b'{"a": 1}\r\n')


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    assert read(b"HTTP/1.0 404 Not Found\r\n\r\n{}") == (404, "Not Found", b"{}")


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",        # body shorter than said
    b"HTTP/1.1 200 OK\r\ncontent-le",                           # headers broken off
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
    b"SSH-2.0-OpenSSH_9.6\r\n",                                 # not HTTP at all
    b"",
])
def test_what_is_not_a_whole_answer_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        read(raw)


def serve_once(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A real listener on loopback that reads one request and writes ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


def test_a_daemon_that_stops_mid_answer_is_a_one_line_error() -> None:
    listener, thread = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"Ite")
    with listener:
        client = ApiClient("127.0.0.1", listener.getsockname()[1], timeout=5)
        with pytest.raises(ApiError) as caught:
            client.get("/api/v1/orchestrator/jobs")
        thread.join(5)
    message = str(caught.value)
    assert "stopped answering" in message and "\n" not in message


def test_a_port_that_speaks_no_http_is_named_as_such() -> None:
    listener, thread = serve_once(b"/multistream/1.0.0\n")  # a libp2p port, say
    with listener:
        client = ApiClient("127.0.0.1", listener.getsockname()[1], timeout=5)
        with pytest.raises(ApiError, match=r"does not speak HTTP \(it said /multistream/1\.0\.0\); "
                                           r"is that the daemon's API port"):
            client.get("/api/v1/agent/version")
        thread.join(5)


def test_an_error_answer_is_shown_by_its_message() -> None:
    body = b'{"Status": 404, "Message": "job \'j-1\' not found", "Code": "NotFound"}'
    listener, thread = serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s"
                                  % (len(body), body))
    with listener:
        client = ApiClient("127.0.0.1", listener.getsockname()[1], timeout=5)
        with pytest.raises(ApiError, match="the daemon answered 404: job 'j-1' not found"):
            client.get("/api/v1/orchestrator/jobs/j-1")
        thread.join(5)
