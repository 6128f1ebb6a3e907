"""edifd's control socket: the JSON-lines protocol without a socket, then the edge on a real AF_UNIX
socket in a temporary directory (mode 0600, SO_PEERCRED, stale sockets, one edifd per socket)."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from edifd.edges.control_socket import (
    MAX_LINE,
    ControlProtocol,
    ControlRefused,
    ControlSocket,
    ControlSocketError,
    ControlUnavailable,
    request,
)


def _commands():
    def echo(args):
        return {"args": args}

    def picky(args):
        raise ValueError("level: one of debug, info")

    def broken(args):
        raise KeyError("secret-looking detail")

    return {"echo": echo, "picky": picky, "broken": broken}


def _answers(proto: ControlProtocol, data: bytes) -> list[dict]:
    return [json.loads(line) for line in proto.feed(data)]


def test_requests_answered_in_order_across_split_reads():
    proto = ControlProtocol(_commands())
    assert _answers(proto, b'{"command": "echo", "args": {"a": 1}}\n{"comm') == [
        {"ok": True, "result": {"args": {"a": 1}}}]
    assert _answers(proto, b'and": "echo"}\n\n') == [{"ok": True, "result": {"args": {}}}]


@pytest.mark.parametrize("line,needle", [
    (b"not json", "not a JSON request"),
    (b"\xff\xfe", "not a JSON request"),
    (b"[1]", 'a request is {"command": NAME'),
    (b'{"command": 3}', 'a request is {"command": NAME'),
    (b'{"command": "echo", "args": [1]}', "args: expected an object"),
    (b'{"command": "nope"}', "unknown command 'nope' (echo, picky, broken)"),
    (b'{"command": "picky"}', "level: one of debug, info"),
])
def test_bad_requests_get_a_sentence_and_the_connection_goes_on(line, needle):
    proto = ControlProtocol(_commands())
    (bad,) = _answers(proto, line + b"\n")
    assert bad["ok"] is False and needle in bad["error"]
    assert _answers(proto, b'{"command": "echo"}\n') == [{"ok": True, "result": {"args": {}}}]


def test_a_failing_command_names_its_type_not_its_message():
    (ans,) = _answers(ControlProtocol(_commands()), b'{"command": "broken"}\n')
    assert ans == {"ok": False, "error": "broken failed (KeyError); see edifd's log"}


def test_an_endless_line_closes_the_conversation():
    proto = ControlProtocol(_commands())
    (ans,) = _answers(proto, b"x" * (MAX_LINE + 1))
    assert not ans["ok"] and "longer than" in ans["error"] and proto.closed
    assert proto.feed(b'{"command": "echo"}\n') == []


@pytest.fixture
def served(tmp_path):
    sock = ControlSocket(tmp_path / "edifd.sock", _commands())
    sock.start()
    yield sock
    sock.stop()


def test_the_socket_is_owner_only_and_answers_requests(served):
    mode = os.stat(served.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert request(served.path, "echo", {"x": "y"}) == {"args": {"x": "y"}}
    with pytest.raises(ControlRefused, match="level: one of"):
        request(served.path, "picky")


def test_several_requests_on_one_connection(served):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(served.path))
        c.sendall(b'{"command": "echo", "args": {"n": 1}}\n{"command": "echo", "args": {"n": 2}}\n')
        buf = b""
        while buf.count(b"\n") < 2:
            buf += c.recv(4096)
    assert [json.loads(x)["result"]["args"]["n"] for x in buf.splitlines()] == [1, 2]


def test_a_peer_of_another_uid_is_refused(tmp_path):
    sock = ControlSocket(tmp_path / "edifd.sock", _commands(), allowed_uids=frozenset({os.getuid() + 1}))
    sock.start()
    try:
        with pytest.raises(ControlRefused, match=f"permission denied for uid {os.getuid()}"):
            request(sock.path, "echo")
    finally:
        sock.stop()


def test_stop_removes_the_socket_and_then_nobody_answers(served):
    path = served.path
    served.stop()
    assert not path.exists()
    with pytest.raises(ControlUnavailable):
        request(path, "echo")


def test_a_stale_socket_is_replaced_a_live_one_and_a_file_are_not(tmp_path):
    path = tmp_path / "edifd.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # left behind by an edifd that died: nobody listens
    first = ControlSocket(path, _commands())
    first.start()
    try:
        with pytest.raises(ControlSocketError, match="another edifd answers"):
            ControlSocket(path, _commands()).start()
        assert request(path, "echo") == {"args": {}}  # the first one still serves
    finally:
        first.stop()
    path.write_text("not a socket")
    with pytest.raises(ControlSocketError, match="is not a socket"):
        ControlSocket(path, _commands()).start()
    assert path.read_text() == "not a socket"
