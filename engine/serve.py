"""The control API: a scene rendering continuously in a background thread, driven over HTTP.

``latentscape serve [SCENE] --host H --port N --token T`` runs :func:`create_app`
under uvicorn. Endpoints (see docs/delivery.md)::

    GET  /health/live      200 while the process runs
    GET  /health/ready     200 once a scene is loaded and a frame rendered, else 503
    GET  /metrics          Prometheus text
    GET  /status           scene, frames, fps, stage ms, adapters, plugins, outputs
    POST /scene/reload     reload the current scene (a failure keeps the old one: 422)
    POST /scene            {"path": "..."} switch scene (same rule)
    POST /adapters/{target}  {"mix": "name" | {"name": w} | null, "fade_s": 0}
    POST /params           {"params": {"key": value}}

POST calls need ``Authorization: Bearer <token>`` (401 otherwise). Scene swaps,
adapter swaps and parameters land between frames, never inside one.
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
        from latentscape.clock import WallClock
        from latentscape.session import CameraSpec, Session
        from latentscape.sinks import open_sink

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
        for out in cfg.outputs:
            sink = open_sink(out, overwrite=True)
            sink.open(cfg.width, cfg.height, self.session.scene.fps)
            self.sinks.append(sink)
        self._thread = threading.Thread(target=self._run, name="latentscape-frame-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        for sink in self.sinks:
            sink.close()
        self.sinks.clear()
        if self.session is not None:
            self.session.close()

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
            "outputs": [{"target": getattr(k, "target", str(k)), **getattr(k, "stats", {})} for k in self.sinks],
        }


def create_app(cfg: ServeConfig, token: str, *, engine: Engine | None = None):
    """The FastAPI app; the engine starts with the app's lifespan and stops with it (SIGTERM under uvicorn)."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Header, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from latentscape.errors import AdapterError, ConfigError, LatentscapeError

    if not token:
        raise ConfigError("the control API needs a token", hint="pass --token or set LATENTSCAPE_TOKEN")
    eng = engine or Engine(cfg)

    @asynccontextmanager
    async def lifespan(app):
        import anyio

        await anyio.to_thread.run_sync(eng.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(eng.stop)

    app = FastAPI(title="latentscape", lifespan=lifespan)
    app.state.engine = eng

    def auth(authorization: str | None = Header(default=None)) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"error": "malformed request", "detail": exc.errors()})

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
        try:
            return {"ok": True, "scene": eng.switch(Path(body.path) if body.path else None)}
        except Exception as err:  # noqa: BLE001
            return load_failed(err)

    @app.post("/adapters/{target}", dependencies=[Depends(auth)])
    def adapters(target: str, body: AdapterBody):
        if eng.session is None:
            raise HTTPException(409, detail="no scene loaded")
        try:
            accepted = eng.session.request_adapter(target, body.mix, fade_s=body.fade_s, source="api")
        except (AdapterError, ConfigError) as err:
            return JSONResponse(status_code=400, content={"error": "adapter request rejected", "detail": str(err)})
        return {"ok": bool(accepted), "vetoed": not accepted}

    @app.post("/params", dependencies=[Depends(auth)])
    def params(body: ParamsBody):
        if eng.session is None:
            raise HTTPException(409, detail="no scene loaded")
        try:
            for k, v in body.params.items():
                eng.session.set_param(k, v, source="api")
        except ConfigError as err:
            return JSONResponse(status_code=400, content={"error": "bad parameter", "detail": str(err)})
        return {"ok": True, "params": sorted(body.params)}

    return app


def serve(cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Run the control API under uvicorn until SIGINT/SIGTERM (uvicorn's handlers stop it cleanly)."""
    import os
    import sys

    import uvicorn

    token = token or os.environ.get("LATENTSCAPE_TOKEN")
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"latentscape serve: no --token given; this run's token is {token}", file=sys.stderr, flush=True)
    app = create_app(cfg, token)
    uvicorn.run(app, host=host, port=port, log_level="info", lifespan="on")
