"""The standard-library Docker Engine calls an idle node makes (node.executor.docker_socket),
against the real dockerd where they talk to one."""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from typing import Any

import pytest

from node.executor.docker_socket import (
    DEFAULT_UNIX_SOCKET,
    STDERR,
    STDOUT,
    AttachedOutput,
    EngineError,
    EngineSocket,
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, f"EngineSocket(unix://{DEFAULT_UNIX_SOCKET})"),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"},
         "EngineSocket(unix:///run/user/1000/docker.sock)"),
        ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, "EngineSocket(tcp://127.0.0.1:2375)"),
        ({"DOCKER_HOST": "tcp://docker.internal"}, "EngineSocket(tcp://docker.internal:2375)"),
    ],
)
def test_the_socket_is_the_one_docker_py_would_use(environ: dict[str, str],
                                                    expected: str) -> None:
    assert repr(EngineSocket.from_env(environ)) == expected


@pytest.mark.parametrize("environ", [
    {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1"},
    {"DOCKER_HOST": "ssh://user@host"},
])
def test_tls_and_ssh_are_left_to_docker_py(environ: dict[str, str]) -> None:
    assert EngineSocket.from_env(environ) is None


def test_an_engine_that_is_not_there_is_an_error_without_a_status(tmp_path) -> None:
    engine = EngineSocket(unix_path=str(tmp_path / "docker.sock"), timeout=5)
    with pytest.raises(EngineError) as raised:
        engine.ping()
    assert raised.value.status is None
    assert "docker.sock" in str(raised.value)


@pytest.mark.integration
def test_list_and_remove_by_label_and_dockerds_own_words_for_a_missing_container(
    docker_client: Any, busybox_image: str
) -> None:
    engine = EngineSocket.from_env(timeout=30)
    assert engine is not None
    engine.ping()
    label = f"bacnode.test={uuid.uuid4().hex}"
    key, value = label.split("=")
    container = docker_client.containers.create(busybox_image, ["sleep", "60"],
                                                labels={key: value}, network_mode="none")
    try:
        container.start()
        assert [found["Id"] for found in engine.containers(label)] == [container.id]
        engine.remove(container.id)
        assert engine.containers(label) == []
        with pytest.raises(EngineError) as raised:
            engine.remove(container.id)
        assert raised.value.status == 404
        assert "No such container" in str(raised.value)
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass


def test_something_other_than_dockerd_on_the_socket_is_an_error_without_a_status(
        tmp_path) -> None:
    engine, thread, server = _answering(tmp_path, b"SSH-2.0-OpenSSH_9.6\r\n")
    try:
        with pytest.raises(EngineError) as raised:
            engine.ping()
        assert raised.value.status is None
        assert "engine.sock" in str(raised.value)
    finally:
        thread.join(5)
        server.close()


def test_attached_output_is_cut_into_frames_however_it_arrives() -> None:
    """dockerd's multiplexed stream: an 8-byte header (stream, size) and the bytes, which a
    socket may deliver split anywhere; a frame cut off by a lost connection is dropped."""
    frames = [(STDOUT, b"out " * 5000), (STDERR, b"err"), (STDOUT, b""), (STDOUT, b"end")]
    wire = b"".join(struct.pack(">BxxxI", stream, len(data)) + data for stream, data in frames)
    wire += struct.pack(">BxxxI", STDOUT, 100) + b"cut short"
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def send() -> None:
            for start in range(3, len(wire), 7):  # odd-sized pieces across every boundary
                theirs.sendall(wire[start:start + 7])
            theirs.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        output = AttachedOutput(ours, wire[:3])  # what came with the answer's head
        assert list(output) == frames
        sender.join()


def test_attaching_to_a_missing_container_is_dockerds_404(docker_client: Any) -> None:
    engine = EngineSocket.from_env()
    assert engine is not None
    with pytest.raises(EngineError) as raised:
        engine.attach(f"nosuch-{uuid.uuid4().hex[:8]}")
    assert raised.value.status == 404 and "No such container" in str(raised.value)


def _answering(tmp_path, answer: bytes) -> tuple[EngineSocket, threading.Thread, socket.socket]:
    """A socket that answers one request with ``answer`` and closes, as dockerd does after
    ``Connection: close``; sent in odd-sized pieces."""
    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            for start in range(0, len(answer), 5):
                connection.sendall(answer[start:start + 5])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return EngineSocket(unix_path=path, timeout=5), thread, server


def test_a_chunked_answer_is_put_back_together(tmp_path) -> None:
    body = b'{"StatusCode": 137, "Error": null}\n'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]))
    engine, thread, server = _answering(
        tmp_path, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    try:
        assert engine.wait("abc") == 137
    finally:
        thread.join(5)
        server.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    b'{"StatusCode": 0',
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    b'\r\n20\r\n{"StatusCode": 0',
    b"HTTP/1.1 200 OK\r\nContent-Type: appl",
])
def test_an_answer_cut_off_is_an_error_without_a_status(tmp_path, answer: bytes) -> None:
    """The fault (dockerd's connection lost mid-answer) is played by a fake socket: a real
    dockerd cannot be made to stop mid-answer on cue."""
    engine, thread, server = _answering(tmp_path, answer)
    try:
        with pytest.raises(EngineError) as raised:
            engine.wait("abc")
        assert raised.value.status is None
        assert "cut off" in str(raised.value)
    finally:
        thread.join(5)
        server.close()


@pytest.mark.integration
def test_dockerds_answers_come_back_whole(docker_client: Any, busybox_image: str) -> None:
    engine = EngineSocket.from_env(timeout=30)
    assert engine is not None
    inspected = engine.request("GET", f"/images/{busybox_image}/json")
    assert inspected["Id"] == docker_client.images.get(busybox_image).id
    assert engine.image_present(busybox_image)
    assert not engine.image_present(f"nosuch-{uuid.uuid4().hex[:8]}:latest")
    container_id = engine.create({"Image": busybox_image, "Cmd": ["sh", "-c", "exit 3"],
                                  "HostConfig": {"NetworkMode": "none"}},
                                 f"bacnode-test-{uuid.uuid4().hex[:8]}")
    try:
        engine.start(container_id)
        assert engine.wait(container_id) == 3
    finally:
        engine.remove(container_id)
    with pytest.raises(EngineError) as raised:
        engine.wait(container_id)
    assert raised.value.status == 404
