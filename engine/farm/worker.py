"""A farm worker: one Session on the scene clock, kept loaded across chunks.

The driver wraps :class:`FarmWorker` in a Ray actor (one per ``--workers``). The
worker fetches the scene by digest (:mod:`latentscape.farm.ship`), opens it with the
:class:`latentscape.clock.SceneClock` (offline: frame ``i`` is rendered at scene time
``i / fps`` whatever the hour, exactly as ``latentscape render`` does) and renders the
frames it is sent, returning PNG bytes and their sha256. A frame fails when rendering
raises or when a plugin call failed while it was made (a plugin error, timeout or crash
would otherwise leave a frame that a retry can render differently); after a failure the
worker loads its scene again, so no plugin state from the failed frame reaches the next.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from latentscape.errors import LatentscapeError
from latentscape.farm.ship import Payload, materialize


@dataclass
class WorkerSpec:
    """Everything a worker needs, none of it a driver-only path."""

    scene: Payload
    """Payloads travel without their bytes and references (see :meth:`FarmWorker._ensure`)."""
    camera_file: Payload | None = None
    stylizer: Payload | None = None
    camera: str | None = None
    orbit: int | None = None
    width: int | None = None
    height: int | None = None
    device: str = "cpu"
    backend: str | None = None
    stylize: bool = True
    threads: int = 1
    """torch intra-op threads (the CPUs Ray gives this worker): fixed, so a frame's bytes
    do not depend on how busy the machine is."""
    env: dict[str, str] = field(default_factory=dict)


class _PluginLog(logging.Handler):
    """Keeps the plugin host's warnings of one frame (what a failed plugin call said)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def encode_png(rgb) -> bytes:
    """The same encoder and settings as :class:`latentscape.sinks.PngSequenceSink`."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _fetch_from_ray(payload: Payload) -> bytes:
    import ray

    return ray.get(payload.ref[0])


class FarmWorker:
    """Renders frames of one scene. Loading never raises: an error loading the scene is
    kept and reported by :meth:`describe`, so the driver can show it as a typed error."""

    def __init__(self, spec: WorkerSpec, name: str = "w?", fetch: Callable[[Payload], bytes] | None = None):
        import torch

        self.spec, self.name = spec, name
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._fetch = fetch or _fetch_from_ray
        self.session = None
        self.error: str | None = None
        self._verdicts: list[dict] = []
        os.environ.update(spec.env)
        torch.set_num_threads(max(1, int(spec.threads)))
        try:  # the numba CPU kernels: no more threads than Ray gave this worker
            import numba

            numba.set_num_threads(max(1, min(int(spec.threads), numba.config.NUMBA_NUM_THREADS)))
        except ImportError:
            pass

    def _ensure(self, refs: dict[str, list[Any]] | None) -> None:
        """Load the scene on first use. ``refs``: kind -> [object ref] of the payloads; they
        come with every call rather than with the constructor, so a restarted actor
        (after its process died) loads again from the driver's references."""
        if self.session is not None or self.error is not None:
            return
        for kind, ref in (refs or {}).items():
            payload = getattr(self.spec, kind)
            if payload is not None and not payload.ref:
                payload.ref = list(ref)
        try:
            self.session = self._open()
        except LatentscapeError as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - reported to the driver, which stops the job
            self.error = f"{type(err).__name__}: {err}"

    def _open(self):
        from latentscape.session import CameraSpec, Session

        s = self.spec
        scene_dir = materialize(s.scene, self._fetch)
        camera_file = materialize(s.camera_file, self._fetch) if s.camera_file is not None else None
        stylizer = materialize(s.stylizer, self._fetch) if s.stylizer is not None else None
        cameras = CameraSpec(name=s.camera, file=camera_file, orbit=s.orbit, width=s.width, height=s.height)
        # Guardrail decisions go back to the driver with each frame (verdict listener). A scene's
        # own [guardrails] audit_log would land in the cache folder (and fail its lock next time):
        # it goes to a scratch file whose folder is removed once open (Linux keeps the open file).
        scratch = Path(tempfile.mkdtemp(prefix="latentscape-farm-audit-"))
        try:
            return Session.open(scene_dir, device=s.device, backend=s.backend, stylize=s.stylize,
                                stylizer=stylizer, cameras=cameras, audit_log=scratch / "audit.jsonl",
                                verdict_listeners=[self._verdicts.append])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def describe(self, refs: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        """The job's shape as this worker sees it (or the error that stopped it loading)."""
        self._ensure(refs)
        base = {"worker": self.name, "host": self.host, "pid": self.pid}
        if self.session is None:
            return {**base, "error": self.error}
        path = self.session.path
        cam = path.cameras[0]
        return {**base, "error": None, "frames": len(path.cameras), "width": cam.width, "height": cam.height,
                "fps": path.fps, "scene_version": self.session.scene.version}

    def _plugin_failures(self) -> dict[str, int]:
        report = getattr(self.session.hooks, "report", None)
        return {name: sum(r["failures"].values()) for name, r in (report() if report else {}).items()}

    def render(self, indices: list[int], refs: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
        """Render ``indices`` in order; one result per frame: ``ok``, ``png``, ``sha256``,
        ``error``, ``ms``, ``audit`` (its guardrail decisions), and who made it."""
        self._ensure(refs)
        out = []
        for index in indices:
            out.append(self._render_one(int(index)))
        return out

    def _render_one(self, index: int) -> dict[str, Any]:
        res: dict[str, Any] = {"index": index, "worker": self.name, "host": self.host, "pid": self.pid,
                               "ok": False, "png": None, "sha256": None, "error": None, "audit": []}
        if self.session is None:
            res["error"] = f"the worker could not load the scene: {self.error}"
            return res
        t0 = time.perf_counter()
        before = self._plugin_failures()
        self._verdicts.clear()
        plugin_log = _PluginLog()
        logging.getLogger("latentscape.plugins").addHandler(plugin_log)
        try:
            try:
                frame = self.session.render(index)
            finally:
                logging.getLogger("latentscape.plugins").removeHandler(plugin_log)
            after = self._plugin_failures()
            failed = sorted(n for n, k in after.items() if k > before.get(n, 0))
            if failed:
                said = "; ".join(m for m in plugin_log.messages if any(f"plugin {n}:" in m for n in failed))
                raise RuntimeError(f"plugin {', '.join(failed)} failed on this frame: {said or 'see the worker log'}")
            t1 = time.perf_counter()
            png = encode_png(frame.rgb)
            res["render_ms"] = (t1 - t0) * 1000.0
            res["encode_ms"] = (time.perf_counter() - t1) * 1000.0
            res.update(ok=True, png=png, sha256=hashlib.sha256(png).hexdigest(), audit=list(self._verdicts))
        except Exception as err:  # noqa: BLE001 - a poison frame is reported, the worker goes on
            res["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            res["traceback"] = traceback.format_exc(limit=8)
            self._reset()
        res["ms"] = (time.perf_counter() - t0) * 1000.0
        return res

    def _reset(self) -> None:
        """Load the scene again: a fresh plugin host, nothing left over from a failed frame."""
        try:
            old, self.session = self.session, self._open()
            old.close()
        except Exception as err:  # noqa: BLE001
            self.error = f"reloading after a failed frame: {type(err).__name__}: {err}"

    def ping(self) -> dict[str, Any]:
        return {"worker": self.name, "host": self.host, "pid": self.pid}

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
