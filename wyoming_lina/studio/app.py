"""The voice studio's HTTP server: the page, the JSON API, /healthz and /metrics (aiohttp).

It runs in the server's own event loop, beside the Wyoming server, on the same host as
``--uri``. Every API request passes two guards first (``security.py``): the bearer token when
one is configured, and, for requests that change something, the ``Origin`` check. Every
failure becomes ``{"error", "code"}`` JSON (``errors.py``). The page is four static files,
served by name; under Home Assistant ingress the page gets a ``<base>`` from
``X-Ingress-Path`` so its relative URLs work under any path prefix.
"""

from __future__ import annotations

import logging
import shutil
from importlib import resources
from urllib.parse import urlparse

from aiohttp import web

from .. import __version__
from ..errors import LinaError
from ..server.app import ListenError
from . import api, jobs_api
from .api import StudioContext
from .errors import ApiError, error_response, sentence, status_for
from .security import SAFE_METHODS, bearer_allowed, ingress_base, origin_allowed
from .uploads import UploadError

_LOGGER = logging.getLogger(__name__)
STATIC = {
    "studio.js": "application/javascript",
    "studio.css": "text/css",
    "recorder-worklet.js": "application/javascript",
    "icon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'none'"
)


def _guarded(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


@web.middleware
async def guard(request: web.Request, handler):
    """Token, then origin, then the handler; every failure as JSON; responses counted."""
    ctx: StudioContext = request.app["studio"]
    try:
        if _guarded(request.path):
            if not bearer_allowed(request.headers.get("Authorization"), ctx.token):
                raise ApiError(401, "unauthorized", "This studio needs its access token (--http-token).")
            cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
            if request.method not in SAFE_METHODS and (
                cross_site
                or not origin_allowed(
                    request.headers.get("Origin"), request.headers.get("Host"), request.headers.get("X-Forwarded-Host")
                )
            ):
                raise ApiError(403, "cross-origin", "Changes are only accepted from the studio's own page.")
        response = await handler(request)
    except ApiError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        response = error_response(err.status, err.code, str(err), headers)
    except UploadError as err:
        response = error_response(err.status, err.code, sentence(str(err)))
    except LinaError as err:
        response = error_response(status_for(err), err.code, sentence(str(err)))
    except web.HTTPException as err:
        if not _guarded(request.path) or err.status < 400:
            raise
        response = error_response(err.status, err.reason.lower().replace(" ", "-"), sentence(err.reason))
    except Exception as err:  # a bug: an answer for the page, the details in the log
        _LOGGER.exception("studio request %s %s failed", request.method, request.path)
        response = error_response(500, "internal", f"Something went wrong inside the server ({type(err).__name__}).")
    ctx.metrics.http.labels(str(response.status)).inc()
    return response


def _static(name: str) -> bytes:
    return resources.files("wyoming_lina.studio").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    html = _static("index.html").decode()
    base = ingress_base(request.headers.get("X-Ingress-Path"))
    if base:
        html = html.replace("<head>", f'<head>\n<base href="{base}">', 1)
    html = html.replace("{{version}}", __version__)
    return web.Response(
        text=html, content_type="text/html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC[name], headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    """200 once speech is served, with the start-up phase ("serving" while the fast paths are
    prepared, then "warm") and how decode steps run (on CUDA "pytorch" while kernels are built,
    "kernels", "graphs", then "compiled"; "plain" on CPU)."""
    ctx = request.app["studio"]
    state = ctx.serving.as_dict() if ctx.serving is not None else {}
    body = {"status": "ok" if ctx.ready else "starting", **state}
    return web.json_response(body, status=200 if ctx.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app["studio"].metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(ctx: StudioContext) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=1 << 20)  # JSON bodies; files are streamed
    app["studio"] = ctx
    app.add_routes(
        [
            web.get("/", index),
            web.get("/static/{file}", static),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/api/status", api.status),
            web.get("/api/voices", api.list_voices),
            web.post("/api/voices", api.add_voice),
            web.delete("/api/voices/{name}", api.remove_voice),
            web.post("/api/voices/{name}/tune", jobs_api.start_tuning),
            web.put("/api/default-voice", api.set_default_voice),
            web.post("/api/speak", api.speak),
            web.post("/api/transcribe", api.transcribe),
            web.get("/api/jobs", jobs_api.list_jobs),
            web.get("/api/jobs/{job}", jobs_api.get_job),
            web.delete("/api/jobs/{job}", jobs_api.delete_job),
            web.get("/api/jobs/{job}/events", jobs_api.job_events),
        ]
    )
    return app


def studio_host(uri: str) -> str | None:
    """The host to bind: the same as the Wyoming ``--uri`` (None: every interface)."""
    host = urlparse(uri).hostname
    return None if host in (None, "", "0.0.0.0", "::") else host


class StudioServer:
    def __init__(self, ctx: StudioContext, host: str | None, port: int):
        self.ctx = ctx
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        shutil.rmtree(self.ctx.uploads_dir, ignore_errors=True)  # left by a server that was killed mid-upload
        self._runner = web.AppRunner(build_app(self.ctx), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as err:
            await self._runner.cleanup()
            raise ListenError(f"cannot listen for the voice studio on port {self.port}: {err}") from err
        await self.ctx.jobs.start()
        _LOGGER.info("voice studio at http://%s:%d/", self.host or "0.0.0.0", self.port)

    async def stop(self, timeout: float = 5.0) -> None:
        await self.ctx.jobs.stop(timeout)
        if self._runner is not None:
            await self._runner.cleanup()
