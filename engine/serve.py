"""The control API: a scene rendering continuously in a background thread, driven over HTTP.

``latentscape serve [SCENE] --host H --port N --token T`` runs :func:`create_app`
under uvicorn. Endpoints (see docs/delivery.md)::

    GET  /health/live      200 while the process runs
    GET  /health/ready     200 once a scene is loaded and a frame rendered, else 503
    GET  /metrics          Prometheus text
    GET  /status           scene, frames, fps, stage ms, adapters, plugins, outputs (stream keys redacted)
    GET  /openapi.json     the API schema (token needed; /docs and /redoc are off)
    POST /scene/reload     reload the current scene (a failure keeps the old one: 422)
    POST /scene            {"path": "..."} switch scene (same rule), only inside the scene roots
    POST /adapters/{target}  {"mix": "name" | {"name": w} | null, "fade_s": 0}
    POST /params           {"params": {"key": value}}

Every call but the four public GETs above needs ``Authorization: Bearer <token>``:
the token is checked from the headers *before* any body is read (401 otherwise);
bodies are JSON (415 otherwise) of at most :data:`MAX_BODY_BYTES` (413 otherwise).
Scene swaps, adapter swaps and parameters land between frames, never inside one.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("latentscape.serve")

MAX_BODY_BYTES = 1 << 20
"""Largest request body accepted (1 MiB; every valid body is a few hundred bytes)."""
PUBLIC = {("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics"), ("GET", "/status"),
          ("HEAD", "/health/live"), ("HEAD", "/health/ready")}
"""What answers without the token; nothing else does (not even a 404)."""

try:  # request bodies (module level: FastAPI resolves the string annotations here)
    from pydantic import BaseModel, ConfigDict

    class SceneBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str | None = None
        """Scene bundle folder; None: the bundled demo."""

    class AdapterBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mix: dict[str, float] | str | None = None
        """An adapter name, a {name: weight} mix, or None for the base weights."""
        fade_s: float = 0.0

    class ParamsBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        params: dict[str, Any]
except ImportError:  # the engine thread works without the HTTP side
    pass


@dataclass
class ServeConfig:
    """What ``latentscape serve`` renders."""

    scene: Path | None = None
    """Scene bundle folder (None: the bundled demo)."""
    width: int = 128
    """Render width (an orbit of the scene)."""
    height: int = 128
    """Render height."""
    orbit_frames: int = 120
    """Frames in one orbit; the loop cycles through them."""
    device: str = "cpu"
    """torch device."""
    backend: str | None = None
    """auto, torch, triton or tcnn (None: the scene's)."""
    max_fps: float | None = None
    """Sleep so as not to render faster than this (None: as fast as possible)."""
    outputs: list[str] = field(default_factory=list)
    """Live outputs (rtmp://..., DIR/stream.m3u8, NAME.fmp4.mp4) fed with every frame."""
    scene_roots: list[Path] | None = None
    """Folders ``POST /scene`` may load scenes from, themselves or anything under them
    (None: the served scene's own folder only); the bundled demo is always allowed."""

    def roots(self) -> list[Path]:
        """The resolved scene roots."""
        from latentscape.scene import demo_scene_path

        if self.scene_roots is not None:
            roots = list(self.scene_roots)
        else:
            roots = [Path(self.scene)] if self.scene is not None else [demo_scene_path()]
        return [Path(r).expanduser().resolve() for r in roots]


class Metrics:
    """The Prometheus metrics of one engine (its own registry: several engines, e.g. in tests, do not clash)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.frames = Counter("latentscape_frames_total", "Frames rendered.", registry=self.registry)
        self.frame_seconds = Histogram("latentscape_frame_seconds", "Wall time to make one frame.",
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                       registry=self.registry)
        self.dropped = Counter("latentscape_dropped_frames_total", "Frames live outputs dropped (slow consumer, server gone).",
                               registry=self.registry)
        self.verdicts = Counter("latentscape_guardrail_verdicts_total", "Guardrail decisions.", ["plugin", "verdict"],
                                registry=self.registry)
        self.swaps = Counter("latentscape_adapter_swaps_total", "Adapter swaps committed.", registry=self.registry)
        self.reloads = Counter("latentscape_scene_loads_total", "Scene loads by result.", ["result"], registry=self.registry)
        self.ready = Gauge("latentscape_ready", "1 when a scene is loaded and a frame rendered.", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Engine:
    """Renders the scene continuously in a background thread; thread-safe controls.

    The scene lives in a :class:`latentscape.session.Session` on the wall clock (a live
    show: schedule triggers follow the time of day); reloads are the session's
    (atomic: a scene that fails to load leaves the old one rendering)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.session = None
        self.scene_path = cfg.scene
        self.frames = 0
        self.last_stats: dict[str, float] = {}
        self.last_error: str | None = None
        self.fps = 0.0
        self.sinks: list = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped_seen = 0

    # ---- lifecycle
    def start(self) -> None:
        """Open the scene and the outputs, then start the frame thread. Idempotent; on a failure
        (a scene that does not load, an unreachable RTMP server) everything opened is closed and
        the typed error propagates."""
        from latentscape.clock import WallClock
        from latentscape.session import CameraSpec, Session
        from latentscape.sinks import open_sink

        if self._thread is not None:
            return
        cfg = self.cfg
        cameras = CameraSpec(orbit=cfg.orbit_frames, width=cfg.width, height=cfg.height)
        try:
            self.session = Session.open(self.scene_path, device=cfg.device, backend=cfg.backend, clock=WallClock(),
                                        cameras=cameras, verdict_listeners=[self._count_verdict])
        except Exception:
            self.metrics.reloads.labels(result="failed").inc()
            raise
        self.metrics.reloads.labels(result="ok").inc()
        self.session.on_swap(lambda *a: self.metrics.swaps.inc())
        try:
            for out in cfg.outputs:
                sink = open_sink(out, overwrite=True)
                sink.open(cfg.width, cfg.height, self.session.scene.fps)
                self.sinks.append(sink)
        except BaseException:
            for sink in self.sinks:
                sink.abort()
            self.sinks.clear()
            self.session.close()
            self.session = None
            raise
        self._thread = threading.Thread(target=self._run, name="latentscape-frame-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the frame thread, close the outputs and the session (idempotent)."""
        from latentscape.errors import OutputError

        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        for sink in self.sinks:
            try:
                sink.close()
            except OutputError as err:
                log.error("%s", err)
        self.sinks.clear()
        if self.session is not None:
            self.session.close()
            self.session = None

    def _count_verdict(self, record: dict) -> None:
        self.metrics.verdicts.labels(plugin=record["plugin"], verdict=record["verdict"]).inc()

    @property
    def ready(self) -> bool:
        return self.session is not None and self.frames > 0

    # ---- the frame loop thread
    def _run(self) -> None:
        index = 0
        t_prev = time.perf_counter()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                frame = self.session.render(index, sinks=self.sinks)
            except Exception as err:  # noqa: BLE001 - keep serving; report on /status
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("frame %d failed", index)
                self._stop.wait(1.0)
                continue
            dt = time.perf_counter() - t0
            self.metrics.frames.inc()
            self.metrics.frame_seconds.observe(dt)
            dropped = sum(getattr(s, "stats", {}).get("dropped", 0) for s in self.sinks)
            if dropped > self._dropped_seen:
                self.metrics.dropped.inc(dropped - self._dropped_seen)
                self._dropped_seen = dropped
            self.frames += 1
            self.metrics.ready.set(1)
            self.last_stats = dict(frame.context.stats)
            now = time.perf_counter()
            self.fps = 0.8 * self.fps + 0.2 / max(now - t_prev, 1e-6) if self.frames > 1 else 1 / max(now - t_prev, 1e-6)
            t_prev = now
            index += 1
            if self.cfg.max_fps:
                self._stop.wait(max(0.0, 1.0 / self.cfg.max_fps - dt))

    # ---- controls
    def allowed(self, path: str | Path) -> Path | None:
        """``path`` resolved (links followed) if it is the bundled demo or lies inside a scene
        root, else None. Says nothing about whether it exists."""
        from latentscape.scene import demo_scene_path

        try:
            real = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        if real == demo_scene_path().resolve():
            return real
        for root in self.cfg.roots():
            if real.is_relative_to(root):
                return real
        return None

    def switch(self, path: Path | None) -> dict:
        """Load ``path`` (None: the bundled demo) and swap it in between frames. Raises (and
        keeps the old scene) on failure."""
        from latentscape.scene import demo_scene_path

        try:
            self.session.reload(path if path is not None else demo_scene_path())
        except Exception:
            self.metrics.reloads.labels(result="failed").inc()
            raise
        self.metrics.reloads.labels(result="ok").inc()
        self.scene_path = path
        log.info("serving scene %s (%s)", self.session.scene.name, self.session.scene.version)
        return self.scene_info()

    def reload(self) -> dict:
        return self.switch(self.scene_path)

    def scene_info(self) -> dict:
        if self.session is None:
            return {}
        sc = self.session.scene
        return {"name": sc.name, "version": sc.version, "path": str(sc.path)}

    def status(self) -> dict:
        s = self.session
        return {
            "ready": self.ready, "scene": self.scene_info(), "frames": self.frames, "fps": round(self.fps, 3),
            "size": [self.cfg.width, self.cfg.height], "stage_ms": self.last_stats, "last_error": self.last_error,
            "adapters": dict(s.adapters.active_versions()) if s is not None and s.adapters is not None else {},
            "plugins": s.hooks.report() if s is not None else {},
            "outputs": [{"target": _output_label(k), **getattr(k, "stats", {})} for k in self.sinks],
        }


def _output_label(sink) -> str:
    from latentscape.sinks.stream import redact_url

    return getattr(sink, "label", None) or redact_url(str(getattr(sink, "target", getattr(sink, "path", sink))))


class _Guard:
    """ASGI middleware in front of everything: the token (headers only) before any body is
    read, then the body size (:data:`MAX_BODY_BYTES`, 413) and type (JSON, 415)."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    @staticmethod
    async def _answer(send, status: int, error: str, headers: list | None = None) -> None:
        import json

        body = json.dumps({"error": error}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (scope["method"], scope["path"]) in PUBLIC:
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.lower(), v)
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not secrets.compare_digest(given.strip(), self.token):
            return await self._answer(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._answer(send, 400, "bad Content-Length")
            if declared > MAX_BODY_BYTES:
                return await self._answer(send, 413, f"body larger than {MAX_BODY_BYTES} bytes")
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return await self._answer(send, 413, f"body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and not (ctype == b"application/json" or (ctype.startswith(b"application/") and ctype.endswith(b"+json"))):
            return await self._answer(send, 415, "request bodies are JSON (Content-Type: application/json)")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def create_app(cfg: ServeConfig, token: str, *, engine: Engine | None = None):
    """The FastAPI app; the engine starts with the app's lifespan and stops with it (SIGTERM under uvicorn)."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Header, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from latentscape.errors import ConfigError, LatentscapeError

    if not token or not token.strip():
        raise ConfigError("the control API needs a token", hint="pass --token-file, set LATENTSCAPE_TOKEN or pass --token")
    eng = engine or Engine(cfg)

    @asynccontextmanager
    async def lifespan(app):
        import anyio

        await anyio.to_thread.run_sync(eng.start)  # a no-op when serve() started it already
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(eng.stop)

    # /docs and /redoc are off (a browser cannot send the bearer token); the schema is served
    # behind the token below.
    app = FastAPI(title="latentscape", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = eng
    app.add_middleware(_Guard, token=token.strip())

    def auth(authorization: str | None = Header(default=None)) -> None:
        # Defence in depth: _Guard has already checked the token before the body was read.
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.strip().encode()):
            raise HTTPException(401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # Only where and what, never the input (it may be bytes, or huge): always serialisable.
        detail = [{"loc": [str(p)[:64] for p in e.get("loc", ())][:8], "msg": str(e.get("msg", ""))[:200],
                   "type": str(e.get("type", ""))[:64]} for e in exc.errors()[:20]]
        return JSONResponse(status_code=422, content={"error": "malformed request", "detail": detail})

    @app.get("/openapi.json", dependencies=[Depends(auth)], include_in_schema=False)
    def openapi():
        return app.openapi()

    def load_failed(err: Exception) -> JSONResponse:
        known = isinstance(err, LatentscapeError)
        return JSONResponse(status_code=422, content={
            "error": "scene load failed; still serving the previous scene",
            "detail": str(err) if known else f"{type(err).__name__}: {err}",
            "serving": eng.scene_info()})

    @app.get("/health/live")
    def live():
        return {"status": "live"}

    @app.get("/health/ready")
    def ready():
        if eng.ready:
            return {"status": "ready", "frames": eng.frames}
        return JSONResponse(status_code=503, content={"status": "not ready", "frames": eng.frames})

    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(eng.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    def status():
        return eng.status()

    @app.post("/scene/reload", dependencies=[Depends(auth)])
    def reload():
        try:
            return {"ok": True, "scene": eng.reload()}
        except Exception as err:  # noqa: BLE001 - any failure keeps the old scene
            return load_failed(err)

    @app.post("/scene", dependencies=[Depends(auth)])
    def switch(body: SceneBody):
        target = None
        if body.path:
            target = eng.allowed(body.path) if "\x00" not in body.path else None
            if target is None:  # the same answer whether or not the path exists
                return JSONResponse(status_code=403, content={
                    "error": "scene path outside the scene roots", "serving": eng.scene_info(),
                    "hint": "serve --scene-root DIR allows scenes under DIR"})
        try:
            return {"ok": True, "scene": eng.switch(target)}
        except Exception as err:  # noqa: BLE001
            return load_failed(err)

    @app.post("/adapters/{target}", dependencies=[Depends(auth)])
    def adapters(target: str, body: AdapterBody):
        if eng.session is None:
            raise HTTPException(409, detail="no scene loaded")
        try:
            accepted = eng.session.request_adapter(target, body.mix, fade_s=body.fade_s, source="api")
        except (LatentscapeError, ValueError, TypeError) as err:
            return JSONResponse(status_code=400, content={"error": "adapter request rejected", "detail": str(err)})
        return {"ok": bool(accepted), "vetoed": not accepted}

    @app.post("/params", dependencies=[Depends(auth)])
    def params(body: ParamsBody):
        if eng.session is None:
            raise HTTPException(409, detail="no scene loaded")
        try:
            for k, v in body.params.items():
                eng.session.set_param(k, v, source="api")
        except (LatentscapeError, ValueError, TypeError) as err:
            return JSONResponse(status_code=400, content={"error": "bad parameter", "detail": str(err)})
        return {"ok": True, "params": sorted(body.params)}

    return app


def serve(cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Run the control API under uvicorn until SIGINT/SIGTERM (uvicorn's handlers stop it cleanly).

    The scene and the outputs are opened before the server starts: a scene that does not
    load or an unreachable RTMP server is a one-line typed error, not a startup traceback."""
    import os
    import sys

    import uvicorn

    token = token or os.environ.get("LATENTSCAPE_TOKEN")
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"latentscape serve: no --token given; this run's token is {token}", file=sys.stderr, flush=True)
    eng = Engine(cfg)
    app = create_app(cfg, token, engine=eng)
    eng.start()
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down cleanly on SIGTERM itself and then re-raises it (exit -15).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", lifespan="on")
    finally:
        eng.stop()
