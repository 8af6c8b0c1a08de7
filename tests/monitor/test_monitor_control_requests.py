"""What a control request must be: a small JSON object, from this server's own origin."""

from __future__ import annotations

import socket
import time

import pytest
from starlette.testclient import TestClient

from runforge.monitor.app import MAX_CONTROL_BODY, create_app
from monitor_helpers import Server, edit_info, make_run, running_info

JSON = {"Content-Type": "application/json"}
BIG = 20 * 1024 * 1024


@pytest.fixture
def live(tmp_path):
    """A run that counts as running (this process stands in for its trainer), and a client of the app."""
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    edit_info(run_dir, **running_info())
    with TestClient(create_app([tmp_path / "runs"], warm_runs=0)) as client:
        yield client, run_dir


def _commands(run_dir):
    return sorted(p.name.split("-", 1)[1] for p in (run_dir / "control").glob("*.cmd"))


def _chunks(total, size=64 * 1024):
    sent = 0
    while sent < total:
        sent += size
        yield b" " * size


@pytest.mark.parametrize("body, headers, status, says", [
    (b"", JSON, 400, "JSON object"),
    (b"pause", JSON, 400, "JSON object"),
    (b"{\"command\": ", JSON, 400, "JSON object"),
    (b"\xff\xfe{}", JSON, 400, "JSON object"),
    (b"[]", JSON, 400, "JSON object"),
    (b"\"pause\"", JSON, 400, "JSON object"),
    (b"null", JSON, 400, "JSON object"),
    (b"[" * 2000 + b"]" * 2000, JSON, 400, "JSON object"),  # deeper than the parser goes
    (b"{\"command\": \"stop\"}", JSON, 400, "not the URL's 'pause'"),
    (b"{\"command\": 1}", JSON, 400, "not the URL's 'pause'"),
    (b"{\"extra\": true}", JSON, 400, "unknown field 'extra'"),
    (b"{}" + b" " * MAX_CONTROL_BODY, JSON, 413, "at most"),
    (b"{}" + b" " * BIG, JSON, 413, "at most"),
    (_chunks(BIG), JSON, 413, "at most"),  # no Content-Length: the streamed size counts
    (b"{}", {**JSON, "Origin": "https://testserver"}, 403, "another origin"),
    (b"{}", {**JSON, "Origin": "http://testserver:8080"}, 403, "another origin"),
    (b"{}", {**JSON, "Origin": "http://evil.example"}, 403, "another origin"),
    (b"{}", {**JSON, "Origin": "null"}, 403, "another origin"),
    (b"{}", {**JSON, "Origin": "http://testserver/path"}, 403, "another origin"),
    (b"{}", {**JSON, "Origin": "http://user@testserver"}, 403, "another origin"),
    (b"{}", {"Content-Type": "text/plain"}, 415, "must be JSON"),
], ids=lambda v: v if isinstance(v, (int, str)) and not isinstance(v, bool) else None)
def test_a_bad_control_request_is_refused_and_sends_nothing(live, body, headers, status, says):
    client, run_dir = live
    response = client.post("/api/run/r/control/pause", headers=headers, content=body)
    assert response.status_code == status, response.text[:200]
    assert says in response.json()["error"]
    assert _commands(run_dir) == []


@pytest.mark.parametrize("body, headers", [
    (b"{}", JSON),
    (b" {\"command\": \"pause\"} ", JSON),
    (b"{}", {**JSON, "Origin": "http://testserver"}),
    (b"{}", {**JSON, "Origin": "http://TESTSERVER:80"}),
    (b"{}", {"Content-Type": "application/json; charset=utf-8"}),
])
def test_a_good_control_request_sends_the_command(live, body, headers):
    client, run_dir = live
    response = client.post("/api/run/r/control/pause", headers=headers, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["sent"] == "pause" and _commands(run_dir) == ["pause.cmd"]


def _raw(port, head, first_body):
    """Send the head and the start of a body, then read the answer without sending the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + first_body)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer, time.monotonic() - started


def test_the_real_server_answers_413_before_a_big_body_arrives(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    edit_info(run_dir, **running_info())
    server = Server(str(tmp_path / "runs"))
    try:
        host = f"127.0.0.1:{server.port}"
        head = (f"POST /api/run/r/control/pause HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {BIG}\r\n\r\n").encode()
        answer, waited = _raw(server.port, head, b"{}")
        assert answer.startswith(b"HTTP/1.1 413") and waited < 5  # said at once, from the header
        head = (f"POST /api/run/r/control/pause HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n").encode()
        chunk = b" " * (2 * MAX_CONTROL_BODY)
        answer, waited = _raw(server.port, head, b"%x\r\n%s\r\n" % (len(chunk), chunk))
        assert answer.startswith(b"HTTP/1.1 413") and waited < 5  # said after 8 KiB, not at the end of 20 MB
        assert _commands(run_dir) == []
    finally:
        server.stop()
