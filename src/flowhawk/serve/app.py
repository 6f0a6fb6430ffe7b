"""The API application and the HTTP server that runs it.

:func:`create_app` builds the FastAPI app over a :class:`~flowhawk.serve.service.Service`
(routes under ``/api/v1``, OpenAPI at ``/api/v1/openapi.json``); with ``manage`` the
app's lifespan starts and stops the service, so the HTTP server's graceful shutdown
(SIGTERM/SIGINT) flushes and checkpoints everything. :func:`run` serves it with
uvicorn, over TLS when ``[serve] tls_cert``/``tls_key`` are set. The web UI (built
files in ``serve/ui/``) is served at ``/`` behind the API, with hash routing in the page.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope

from flowhawk import __version__
from flowhawk.config import Config, parse_hostport
from flowhawk.errors import ConfigError, FlowhawkError
from flowhawk.serve import api_admin, api_events, api_hosts

if TYPE_CHECKING:
    from flowhawk.serve.service import Service

API = "/api/v1"
#: The built web UI (ui/ at the repository root, built by scripts/build-ui.sh).
UI_DIR = Path(__file__).parent / "ui"
_UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(service: Service, manage: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(
        title="flowhawk",
        version=__version__,
        description="Network behavioral analytics: events, hosts, flows, intel, outputs. "
        "Every route except /api/v1/health and /api/v1/login needs "
        "`Authorization: Bearer <token>`.",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    for module in (api_events, api_hosts, api_admin):
        app.include_router(module.router, prefix=API)
    if (UI_DIR / "index.html").is_file():  # after the API: "/" takes what is left
        app.router.routes.append(_UiMount("/", _UiFiles(directory=UI_DIR, html=True), name="ui"))

    @app.exception_handler(FlowhawkError)
    async def _flowhawk_error(request: Request, exc: FlowhawkError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


class _UiFiles(StaticFiles):
    """The web UI's files: content-hashed assets cached for good, the page revalidated."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        hashed = path.startswith("assets/") and response.status_code == 200
        response.headers["Cache-Control"] = (
            "public, max-age=31536000, immutable" if hashed else "no-cache"
        )
        response.headers.update(_UI_HEADERS)
        return response


class _UiMount(Mount):
    """The UI at "/", never answering under /api/ (whose 404s and 405s stay the API's)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path == API or path.startswith(API + "/"):
            return Match.NONE, {}
        return super().matches(scope)


class _Server(uvicorn.Server):
    """Closes live streams as soon as a stop is asked, so shutdown does not wait on them."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.stream.close_all()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, without raising the signal again once stopped: the service has
        flushed and checkpointed by then, and the command ends normally (exit 0)."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def check_tls(cfg: Config) -> None:
    """HTTPS settings name readable files, both or neither."""
    s = cfg.serve
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("[serve] tls_cert and tls_key go together (HTTPS needs both)")
    for name, path in (("tls_cert", s.tls_cert), ("tls_key", s.tls_key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"[serve] {name}: {path} is not a readable file")


def run(service: Service, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; ``on_ready(host, port)`` once listening."""
    check_tls(service.cfg)
    s = service.cfg.serve
    host, port = parse_hostport(s.listen)
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
        ssl_keyfile=str(s.tls_key) if s.tls_key else None,
        log_level="warning",
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = _Server(config, service)
    if on_ready is not None:
        import threading

        def announce() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                sock = server.servers[0].sockets[0].getsockname()
                on_ready(sock[0], sock[1])

        threading.Thread(target=announce, daemon=True).start()
    server.run()
    if not server.started:
        raise FlowhawkError(f"the API could not listen on {s.listen} (see the log above)")
