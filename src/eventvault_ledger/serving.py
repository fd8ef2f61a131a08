"""What ``eventvault serve`` needs around the HTTP app: its socket, its logs, its access log.

The socket is bound here, before the application starts, so that a port
already in use is one clear line and exit status 2 rather than a started
application that then fails to listen. The access log is an ASGI wrapper
around the whole app, so it sees the answer as the client does, with the
``X-Request-ID`` the app gave it; it writes one line per request at INFO on
the ``eventvault_ledger.access`` logger, so ``--log-level info`` shows it and
the default (``warning``) does not.

Once the application has started, what starting made (modules, the app, its
routes and models, the store and its runner) is frozen out of the cyclic
garbage collector's way (:func:`settle_heap`, decision 39).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker uses logging_config without the server extra installed
    from collections.abc import Callable
    from types import FrameType

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from eventvault_ledger.worker_processes import WorkerProcesses

__all__ = ["AccessLog", "PortUnavailable", "listen", "logging_config", "run", "settle_heap"]

_LOGGERS = ("uvicorn", "eventvault", "eventvault_ledger")


class PortUnavailable(Exception):
    """The server cannot listen where it was asked to; the message says why, in one line."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free one), or :class:`PortUnavailable`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restarted server may take over a port its predecessor
        # left in TIME_WAIT. It never allows two listeners on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(_why(exc, host, port)) from exc
    return sock


def _why(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use: stop the program listening there, "
            "or pass --port with another port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return f"this process may not listen on port {port}: pass --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: pass --host with one of its addresses"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"


def logging_config(level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the server's and the toolkit's loggers at ``level``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False} for name in _LOGGERS
        },
    }


class AccessLog:
    """One INFO line per HTTP request: client, request line, status, bytes, time and request id."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger("eventvault_ledger.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        request_id = "-"

        async def send_logged(message: Message) -> None:
            nonlocal status, sent, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            client = scope.get("client")
            target = scope.get("path", "")
            if scope.get("query_string"):
                target = f"{target}?{scope['query_string'].decode('latin-1')}"
            self.log.info(
                '%s "%s %s HTTP/%s" %d %dB %.1fms request %s',
                f"{client[0]}:{client[1]}" if client else "-",
                scope.get("method", ""),
                target,
                scope.get("http_version", "1.1"),
                # No answer started: the server answers 500 for an app that raised.
                status or 500,
                sent,
                (time.perf_counter() - started) * 1000,
                request_id,
            )


def settle_heap() -> None:
    """Collect what starting left behind, then freeze the rest out of later collections.

    The objects a started server holds live as long as it does, yet every
    full collection walked all of them: about 95,000 of them, 46-56 ms each on
    a 2-core machine, about once a second under a load of deposits, and each
    one a pause for every request in flight (the p99 of deposits under wrk
    was 87-100 ms; frozen, 42-59 ms, and a full collection 1 ms). Objects
    frozen are still freed when their last reference goes; only a cycle
    among them would stay, and what starting makes is kept to the end anyway.
    """
    gc.collect()
    gc.freeze()


def run(  # noqa: PLR0913 - the app, its socket, its workers, and uvicorn's settings
    app: ASGIApp,
    sock: socket.socket,
    *,
    log_level: str,
    max_connections: int = 1000,
    keep_alive_timeout: int = 5,
    workers: WorkerProcesses | None = None,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on the listening ``sock`` until interrupted (Ctrl-C or SIGTERM).

    ``workers`` (``serve --projection-workers``) are started once the app's
    startup has finished, so that its read-model tables exist before a worker
    opens them, and stopped after the server.

    ``on_exit`` is called as soon as a signal asks the server to stop: uvicorn
    ends open connections only once their responses complete, and a live-update
    stream never completes by itself, so the app is told at once to end its
    streams, and the server stops in a moment rather than at the graceful
    timeout with a cancelled task's traceback.
    """
    import uvicorn  # noqa: PLC0415 - heavy, and only serving needs it

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                settle_heap()
                if workers is not None:
                    workers.start()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets=sockets)
            # Here, not after run(): for a signal, uvicorn raises it again as run() returns.
            if workers is not None:
                await asyncio.to_thread(workers.stop)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if workers is not None:
                workers.begin_stop()
            if on_exit is not None:
                on_exit()

    config = uvicorn.Config(
        AccessLog(app),
        log_config=logging_config(log_level),
        log_level=log_level,
        access_log=False,
        # Live-update streams never end by themselves: without a bound, a stop would
        # wait for every open dashboard to go away.
        timeout_graceful_shutdown=5,
        # Bounded work per caller: connections at once and idle time between requests
        # (the body's size and time limits are the app's own).
        limit_concurrency=max_connections,
        timeout_keep_alive=keep_alive_timeout,
    )
    # After its graceful stop uvicorn raises the signal again, with the handler it
    # found: for SIGINT the default one ends the process as interrupted, without a
    # KeyboardInterrupt unwinding (and finalizing) everything first.
    if threading.current_thread() is threading.main_thread():  # only there can it set handlers
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Workers are stopped in shutdown(); should the process end any other way, their stdin closes with it.
    Server(config).run(sockets=[sock])
