"""The Prometheus endpoint: prometheus-client's WSGI exposition app on a thread, with a clean stop.

    handle = start_metrics(cfg.metrics, "edifd", lambda: with_hba_ports(collect(daemon), daemon.hba))
    ...
    if handle is not None:
        handle.stop()

`start_metrics` binds `cfg.listen` (a `edifd.metrics.MetricsConfig`) before it returns, so an address in use
is a start-up error, and serves every path with the text exposition of one registry: the tool's
`SnapshotCollector` (a snapshot per scrape, `edifd.metrics`) and prometheus-client's process and platform
collectors. prometheus-client 0.16 (Debian 12)'s `start_http_server` returns nothing to stop, so this edge
serves its `make_wsgi_app` with the standard library's WSGI server itself, as that function does.

prometheus_client is imported when an endpoint starts, not when this module is imported.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from edifd.metrics import (
    CONVERTERS,
    MetricsConfig,
    SnapshotCollector,
    client_available,
    missing_client_message,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_TIMEOUT = 5.0  # s; serve_forever polls for shutdown every 0.5 s


class MetricsError(Exception):
    """The endpoint cannot start (package missing, address in use or not ours); the text says which."""


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scraper every 15 s would drown the tool's own log."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics: %s", format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scraper never holds the tool's exit

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks a resolver for the host's FQDN; in an EDIF VM without DNS that
        # can stall the start for seconds, and the name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """A running endpoint: `address` is the bound (host, port); `stop()` ends it (idempotent)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        host, port = server.server_address[:2]
        self.address: tuple[str, int] = (str(host), int(port))
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()  # returns once serve_forever has left its loop
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)
        log.info("metrics endpoint %s:%d stopped", *self.address)


def start_metrics(cfg: MetricsConfig | None, tool: str,
                  snapshot: Callable[[], Any]) -> MetricsEndpoint | None:
    """Serve `tool`'s metrics ("edifd", "edif_target" or "edif_agent": its converter in `CONVERTERS`),
    each scrape built from one `snapshot()`. `cfg` None (no [metrics] table, the default) starts nothing
    and returns None. Raises MetricsError with a sentence for the operator."""
    convert = CONVERTERS[tool]
    if cfg is None:
        return None
    if not client_available():
        raise MetricsError(missing_client_message())
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, convert, tool))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    server_class = _Server6 if ipaddress.ip_address(cfg.host).version == 6 else _Server
    try:
        server = make_server(cfg.host, cfg.port, make_wsgi_app(registry), server_class, _QuietHandler)
    except OSError as e:
        raise MetricsError(f"metrics.listen {cfg.listen}: cannot listen: {e.strerror or e}") from None
    thread = threading.Thread(target=server.serve_forever, name=f"{tool}-metrics", daemon=True)
    thread.start()
    endpoint = MetricsEndpoint(server, thread)
    log.info("metrics on %s", endpoint.url)
    return endpoint


def run_on(call_soon: Callable[[Callable[[], None]], object], fn: Callable[[], T],
           timeout: float = 5.0) -> Callable[[], T]:
    """A snapshot callable that runs `fn` through `call_soon` — a thread-safe way onto the event loop
    that owns what `fn` reads (`loop.call_soon_threadsafe`, `TargetServer.call_soon`) — and waits for
    it; a loop that does not answer within `timeout` s makes the scrape fail, not hang."""

    def snapshot() -> T:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:  # handed to the scrape thread, which logs it
                done.set_exception(e)

        call_soon(run)
        try:
            return done.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the event loop did not answer within {timeout:g} s") from None

    return snapshot
