"""The REST server's options and its runner: a bound socket, uvicorn, and a server thread.

:func:`serve_in_thread` runs any ASGI 3 application the way :mod:`rest_server` needs;
``rest_server.start_rest_server`` is its one caller (import the public names from
:mod:`rest_server`). Nothing here knows TF Serving's API, and no gRPC or TensorFlow is
imported; uvicorn is imported when a server starts.

Sockets: the listening socket is bound here (``handle.port`` is the real port, also for
port 0) and handed to uvicorn. asyncio sets TCP_NODELAY on every accepted TCP connection
(``_SelectorSocketTransport``); it is also set on the listening socket (inherited on
Linux), so small answers never wait for Nagle + delayed ACK.

Threading: :func:`serve_in_thread` blocks until the server accepts connections or has
failed to start. The server then runs in its own daemon thread with its own asyncio
loop (uvicorn with the httptools parser); the application runs on that loop and
receives the executor (None when ``num_threads`` is 0) for its model calls.
:meth:`RestServerHandle.stop` may be called from any thread except the server's own.

TLS: with ``RestServerOptions.tls`` the port serves HTTPS only (HTTP/1.1, TLS 1.2+; the
``SSLContext`` of :func:`pyserving.server.tls.rest_ssl_context`), and with ``client_verify``
a client certificate signed by ``custom_ca`` is required. A plain-HTTP request or a failed
handshake closes that connection only; it is not logged (asyncio reports handshake
errors at debug level) and the server keeps serving.

Ownership: the handle owns the socket (closed when the server thread ends), the thread
and the executor (shut down by :meth:`RestServerHandle.stop`).

Failure: a port that cannot be bound, or a server that does not start, raises
:class:`UnavailableError` and leaves nothing running. An error that ends the server
later is logged; :attr:`RestServerHandle.running` then reads False.

Request bodies (generic HTTP, used by the application): :func:`read_body` reads an ASGI
body up to a limit (raising :class:`Disconnected` when the client left), and
:func:`gunzip_body` decompresses every gzip member, raising :class:`BodyTooLarge` past
the limit and ``InvalidArgumentError`` for a broken stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pyserving.servable.errors import InvalidArgumentError, UnavailableError
from pyserving.server.tls import TlsSettings, rest_ssl_context

__all__ = [
    "RestServerOptions", "RestServerHandle", "serve_in_thread", "DEFAULT_MAX_BODY_BYTES",
    "BodyTooLarge", "Disconnected", "read_body", "gunzip_body",
]

_log = logging.getLogger("pyserving.server.rest_server")  # one logger for the whole REST front end

#: 64 MiB: a batch of 32 224x224x3 float images as JSON text (~40 MB) fits, and a few such
#: requests at once still fit in memory once parsed into Python objects.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


def _schedulable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class RestServerOptions:
    """``host`` to bind (``"::"``: IPv6 and IPv4 where possible); ``port`` (0 = a free one);
    ``num_threads`` model-call workers (default 4 x schedulable CPUs; 0 = inline on the
    event loop); ``timeout_ms`` per request (default 30000; 0 = none); ``max_body_bytes``,
    also after gzip (default 64 MiB); ``enable_cors`` (``--rest_api_enable_cors_support``);
    ``tls``: serve HTTPS, mutual TLS with ``client_verify`` (``--ssl_config_file``, a
    pyserving extension); None: plain HTTP."""

    host: str = "0.0.0.0"
    port: int = 8501
    num_threads: int = field(default_factory=lambda: 4 * _schedulable_cpus())
    timeout_ms: int = 30000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    enable_cors: bool = False
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        for name, value, low in (("port", self.port, 0), ("num_threads", self.num_threads, 0),
                                 ("timeout_ms", self.timeout_ms, 0), ("max_body_bytes", self.max_body_bytes, 1)):
            if value < low:
                raise InvalidArgumentError(f"RestServerOptions.{name} must be >= {low}, got {value}")
        if self.port > 65535:
            raise InvalidArgumentError(f"RestServerOptions.port must be <= 65535, got {self.port}")


class RestServerHandle:
    """A running REST server. ``port`` is the bound TCP port (the real one for port 0)."""

    def __init__(self, server: Any, thread: threading.Thread, executor: ThreadPoolExecutor | None, port: int) -> None:
        self._server = server
        self._thread = thread
        self._executor = executor
        self.port = port

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting connections; requests in flight get ``grace_s`` seconds to answer,
        then they are cancelled. Returns once the server thread has ended and every worker
        finished its current model call. Safe to call more than once."""
        self._server.config.timeout_graceful_shutdown = grace_s
        self._server.should_exit = True
        self._thread.join()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    dualstack = family == socket.AF_INET6 and host in ("::", "") and socket.has_dualstack_ipv6()
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048, dualstack_ipv6=dualstack)
    except OSError as exc:
        raise UnavailableError(f"Could not bind the REST port {host}:{port}: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a dependency on Linux and macOS), else
    asyncio's. uvloop measured 1.1x (1 client) to 1.2x (32 clients) the requests/s of the
    tiny model over REST, at 13 % less server CPU per request (benchmarks, 2 cores)."""
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install: asyncio's loop works the same, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_in_thread(
    options: RestServerOptions, make_app: Callable[[ThreadPoolExecutor | None], Any]
) -> RestServerHandle:
    """Bind, build the application with ``make_app(executor)``, start the server thread,
    and return once it accepts connections.

    Raises UnavailableError when the port cannot be bound or the server does not start.
    """
    import uvicorn

    context = rest_ssl_context(options.tls) if options.tls is not None else None
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    executor = None
    if options.num_threads:
        executor = ThreadPoolExecutor(max_workers=options.num_threads, thread_name_prefix="pyserving-rest")
    config = uvicorn.Config(
        make_app(executor), http="httptools", ws="none", lifespan="off",
        interface="asgi3", log_config=None,  # log_config=None: leave the program's logging alone
        access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=5,
    )
    if context is not None:
        # uvicorn builds its SSLContext from file names in Config.load(), and serve() skips
        # load() once loaded: load now, then hand it our context (keys stay in memory).
        config.load()
        config.ssl = context
    ready = threading.Event()
    failure: list[BaseException] = []

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            try:
                await super().startup(sockets=sockets)
            finally:
                ready.set()

        async def shutdown(self, sockets: Any = None) -> None:
            if context is not None:
                _abort_idle_connections(self)
            await super().shutdown(sockets=sockets)

    server = _Server(config)

    def run() -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - reported by start_rest_server, or logged
            failure.append(exc)
            _log.error("The REST server on port %d stopped with an error: %r", port, exc)
        finally:
            ready.set()
            sock.close()
            loop.close()

    thread = threading.Thread(target=run, name=f"pyserving-rest-{port}", daemon=True)
    thread.start()
    ready.wait()
    handle = RestServerHandle(server, thread, executor, port)
    if failure or not server.started:
        handle.stop(0)
        reason = repr(failure[0]) if failure else "startup did not complete"
        raise UnavailableError(f"The REST server could not start on {options.host}:{port}: {reason}")
    scheme = "http"
    if options.tls is not None:
        scheme = "https, client certificates required" if options.tls.client_verify else "https"
    _log.info(
        "REST API listening on %s:%d (%s, %s worker threads)", options.host, port, scheme, options.num_threads or "no"
    )
    return handle


def _abort_idle_connections(server: Any) -> None:
    """Drop the TLS connections that wait for their next request, before uvicorn's shutdown
    closes them. A TLS close sends close_notify and then waits for the client's, which an
    idle keep-alive client never sends: each such connection would hold the shutdown for
    the whole grace period. An idle connection has no answer to lose, so it is aborted;
    connections with a request in flight are left to uvicorn (answer, then close)."""
    for connection in list(server.server_state.connections):
        cycle = getattr(connection, "cycle", None)
        transport = getattr(connection, "transport", None)
        if transport is not None and (cycle is None or cycle.response_complete):
            transport.abort()


# -- request bodies ----------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """A request body (or its decompressed form) is over the limit."""


class Disconnected(Exception):
    """The client went away before its request body was read."""


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes | None:
    """The whole ASGI request body, or None once it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        if not chunks and not message.get("more_body", False):
            return chunk  # the usual case: one message, no copy
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def gunzip_body(body: bytes, limit: int) -> bytes:
    """Every gzip member of ``body``, decompressed; BodyTooLarge past ``limit`` bytes."""
    out: list[bytes] = []
    size = 0
    while body:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = decoder.decompress(body, limit - size + 1)
        except zlib.error as exc:
            raise InvalidArgumentError(f"Failed to decompress the gzip request body: {exc}") from None
        size += len(chunk)
        if size > limit or decoder.unconsumed_tail:
            raise BodyTooLarge
        if not decoder.eof:
            raise InvalidArgumentError("Failed to decompress the gzip request body: the gzip stream is truncated")
        out.append(chunk)
        body = decoder.unused_data
    return b"".join(out)
