"""edifd's control socket: status and live commands for `edifctl`, on a root-only AF_UNIX socket.

The protocol is JSON lines: one request object per line, one answer object per line, in order, as many
as the client likes on one connection.

    -> {"command": "status"}
    <- {"ok": true, "result": {...the status edifd writes to status.json...}}
    -> {"command": "log-level", "args": {"level": "debug"}}
    <- {"ok": true, "result": {"level": "debug", "was": "info"}}
    -> {"command": "nope"}
    <- {"ok": false, "error": "unknown command 'nope' (status, log-level, reload)"}

`ControlProtocol` is the sans-IO part (bytes in, answer lines out; the commands are handed in as a table
of functions). `ControlSocket` is the edge: it owns the listening socket at DAEMON.STATE_DIR/edifd.sock
(created mode 0600: only root and edifd's own user can connect, and each connection's SO_PEERCRED uid
is checked again against those two, unix(7)) and one thread per connection. `request` is the client.
Nothing here logs or answers key material: the commands decide what they return.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("edifd.control")

SOCKET_FILE = "edifd.sock"
MAX_LINE = 64 * 1024  # a request longer than this is refused and the connection closed
IDLE_TIMEOUT = 30.0  # s a connection may stay silent before edifd closes it

Command = Callable[[dict[str, Any]], Any]


class ControlSocketError(Exception):
    """The control socket cannot be served (the message says why)."""


class ControlUnavailable(ControlSocketError):
    """Nobody answers on the socket: edifd is not running (or not with this state directory)."""


class ControlRefused(ControlSocketError):
    """edifd answered the request with an error (its sentence is the message)."""


class ControlProtocol:
    """One connection's JSON-lines conversation: `feed` received bytes, get the answer lines to send.

    An answer is `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`; a command that raises
    ValueError answers with its message, any other exception with its type name only (it is logged by
    the edge, never sent). After a line longer than MAX_LINE, `closed` is true: send what `feed`
    returned and hang up."""

    def __init__(self, commands: dict[str, Command]) -> None:
        self.commands = commands
        self._buf = b""
        self.closed = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.closed:
            return []
        self._buf += data
        out: list[bytes] = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                out.append(self.answer(line))
        if len(self._buf) > MAX_LINE:
            self.closed = True
            self._buf = b""
            out.append(_encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"}))
        return out

    def answer(self, line: bytes) -> bytes:
        """The answer line (newline included) to one request line."""
        try:
            req = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return _encode({"ok": False, "error": f"not a JSON request: {e}"})
        if not isinstance(req, dict) or not isinstance(req.get("command"), str):
            return _encode({"ok": False, "error": 'a request is {"command": NAME, "args": {...}}'})
        args = req.get("args", {})
        if not isinstance(args, dict):
            return _encode({"ok": False, "error": "args: expected an object"})
        fn = self.commands.get(req["command"])
        if fn is None:
            return _encode({"ok": False, "error": f"unknown command {req['command']!r} "
                                                  f"({', '.join(self.commands)})"})
        try:
            return _encode({"ok": True, "result": fn(args)})
        except ValueError as e:
            return _encode({"ok": False, "error": str(e)})
        except Exception as e:  # a bug in a command must not end the daemon; the log has the traceback
            log.exception("control command %s failed", req["command"])
            return _encode({"ok": False,
                            "error": f"{req['command']} failed ({type(e).__name__}); see edifd's log"})


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, default=str).encode() + b"\n"


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class ControlSocket:
    """The listening socket and its threads, from `start()` to `stop()` (which removes the socket file)."""

    def __init__(self, path: Path, commands: dict[str, Command], *,
                 allowed_uids: frozenset[int] | None = None) -> None:
        self.path = Path(path)
        self.commands = commands
        self.allowed_uids = allowed_uids if allowed_uids is not None else frozenset({0, os.getuid()})
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._ino: int | None = None

    def start(self) -> None:
        """Bind and listen; ControlSocketError if another edifd answers there or the path is not a socket."""
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the node is 0600 from its first moment
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            raise ControlSocketError(f"cannot bind {self.path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._ino = os.stat(self.path).st_ino
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control-socket", daemon=True)
        self._thread.start()

    def _clear_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{self.path} exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            os.unlink(self.path)  # left by an edifd that died: nobody listens
            return
        finally:
            probe.close()
        raise ControlSocketError(f"another edifd answers on {self.path}")

    def _accept_loop(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, _addr = self._sock.accept()
                    except OSError:
                        continue
                    threading.Thread(target=self._serve, args=(conn,), name="control-conn",
                                     daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            uid = peer_uid(conn)
            if uid not in self.allowed_uids:
                log.warning("control socket: refused a connection from uid %d", uid)
                conn.sendall(_encode({"ok": False, "error": f"permission denied for uid {uid}"}))
                return
            conn.settimeout(IDLE_TIMEOUT)
            proto = ControlProtocol(self.commands)
            while not proto.closed:
                data = conn.recv(65536)
                if not data:
                    return
                for line in proto.feed(data):
                    conn.sendall(line)
        except OSError:
            return  # the client went away, or idled out
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Stop accepting, close every connection, remove the socket file (if it is still ours)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._ino:
                    os.unlink(self.path)
        self._wake_r.close()
        self._wake_w.close()


def request(path: Path, command: str, args: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
    """Send one request to edifd's control socket; its result, ControlRefused with edifd's sentence,
    ControlUnavailable when nobody listens there, ControlSocketError for anything else."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlUnavailable(f"nobody answers on {path}") from None
        except OSError as e:
            raise ControlSocketError(f"cannot connect to {path}: {e.strerror or e}") from None
        try:
            sock.sendall(_encode({"command": command, "args": args or {}}))
            buf = b""
            while b"\n" not in buf:
                data = sock.recv(1 << 20)
                if not data:
                    raise ControlSocketError(f"{path}: edifd closed the connection without an answer")
                buf += data
        except TimeoutError:
            raise ControlSocketError(f"{path}: no answer within {timeout:g} s") from None
        except OSError as e:
            raise ControlSocketError(f"{path}: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(buf.split(b"\n", 1)[0])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlSocketError(f"{path}: the answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ControlSocketError(f"{path}: the answer is not an edifd answer")
    if not answer["ok"]:
        raise ControlRefused(str(answer.get("error")))
    return answer.get("result")
