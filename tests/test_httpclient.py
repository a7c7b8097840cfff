"""The tools' HTTP client (wopihost/validator/httpclient.py) against a host that closes an idle connection,
unanswered, as a request arrives on it: what a host whose keepalive runs out just then does. The validator and
`wopihost replay` send through it; each is checked here after a pause such a host would have lost a request to."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import requests
from click.testing import CliRunner

from wopihost.cli import main
from wopihost.validator.httpclient import IDLE_SECONDS, Client
from wopihost.validator.transport import HttpCall, Transport

from .test_replay import FILE, entry, har

KEEPALIVE = 2.0  # the host's (gunicorn's default): a connection idle this long is closed as its next request arrives
PAUSE = KEEPALIVE + 0.1


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Host:
    """Answers every request 200 with no body, on as many kept-alive connections as the client opens."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.lost: list[bytes] = []  # the request lines of the requests it closed a connection on

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.connections += 1
            threading.Thread(target=self.connection, args=(conn,), daemon=True).start()

    def connection(self, conn: socket.socket) -> None:
        with conn:
            answered = None
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                length = content_length(head)
                while len(pending) < length:
                    pending += conn.recv(65536)
                pending = pending[length:]
                if answered is not None and time.monotonic() - answered >= KEEPALIVE:
                    self.lost.append(head.split(b"\r\n")[0])
                    return  # closed with the request unread, as a host's idle sweep would
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                answered = time.monotonic()


@contextmanager
def host() -> Iterator[Host]:
    serving = Host()
    threading.Thread(target=serving.serve, daemon=True).start()
    try:
        yield serving
    finally:
        serving.listener.close()


def test_the_host_loses_a_request_a_plain_session_sends_after_a_pause():
    """What the client is for: without it, the second POST gets no answer."""
    with host() as serving, requests.Session() as http:
        assert http.post(f"http://127.0.0.1:{serving.port}/a").status_code == 200
        time.sleep(PAUSE)
        try:
            http.post(f"http://127.0.0.1:{serving.port}/b")
        except requests.ConnectionError:
            pass
        else:
            raise AssertionError("the host answered a request it should have lost")
    assert serving.lost == [b"POST /b HTTP/1.1"]


def test_a_connection_is_kept_between_requests_and_let_go_after_a_pause(monkeypatch):
    # the client's clock, moved by the test: a loaded machine's stall between two requests is no pause
    now = [0.0]
    monkeypatch.setattr("wopihost.validator.httpclient.time", SimpleNamespace(monotonic=lambda: now[0]))
    with host() as serving, Client() as http:
        url = f"http://127.0.0.1:{serving.port}/"
        for _ in range(3):
            assert http.post(url).status_code == 200
            now[0] += IDLE_SECONDS  # not more
        assert serving.connections == 1
        now[0] += 0.01
        assert http.post(url).status_code == 200  # on a new connection
        assert http.post(url).status_code == 200
    assert serving.connections == 2 and serving.lost == []


def test_the_validator_sends_a_request_after_a_delay_on_a_new_connection():
    with host() as serving:
        transport = Transport(timeout=5)
        try:
            for pause in (0, PAUSE):
                time.sleep(pause)
                response, _, _ = transport.send(HttpCall("POST", f"http://127.0.0.1:{serving.port}/wopi/files/x", {}))
                assert response.status == 200
        finally:
            transport.close()
    assert serving.connections == 2 and serving.lost == []


def test_a_replay_at_the_recorded_speed_sends_a_request_after_a_gap_on_a_new_connection(tmp_path):
    lock = {"method": "POST", "headers": {"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"}, "operation": "Lock"}
    recording = har(
        entry(**lock, started="2026-11-30T10:00:00.000Z"),
        entry(**lock, started="2026-11-30T10:00:02.100Z"),  # a gap of PAUSE
    )
    (tmp_path / "s.har").write_text(json.dumps(recording))
    with host() as serving:
        result = CliRunner().invoke(
            main,
            [
                "replay",
                str(tmp_path / "s.har"),
                "--wopisrc",
                f"http://127.0.0.1:{serving.port}/wopi/files/{FILE}",
                "--token",
                "secrettoken",
                "--speed",
                "recorded",
            ],
        )
    assert result.output.splitlines()[-1] == "2 requests: 2 matched, 0 diverged, 0 errors", result.output
    assert serving.connections == 2 and serving.lost == []
