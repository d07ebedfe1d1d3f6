"""The farm driver: splits a camera path into chunks, runs them on Ray workers, keeps
the frames that verify, retries the ones that fail, and assembles the result.

    from latentscape.farm import FarmJob, run_farm

    report = run_farm(FarmJob(scene="scenes/demo", out="farm_out", exports=["farm_out/render.mp4"]),
                      address=None, workers=2)          # None: a local Ray instance

Scheduling: one Ray actor per worker (:class:`latentscape.farm.worker.FarmWorker`, which
keeps its scene loaded) declares ``num_cpus`` / ``num_gpus`` as Ray resources. The driver
hands each idle worker the next chunk of missing frames and writes every frame that comes
back (temporary name + rename, then a checksum sidecar), the only writer of OUT. A frame
that fails goes back in the queue alone, preferably to a worker that has not failed it,
until it has been tried ``1 + retries`` times; then it is recorded as failed with its
error and the rest of the job goes on. A worker process that dies takes its chunk with
it: Ray restarts the actor (on any node with room) and every frame of that chunk is
queued again alone, one attempt counted.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from latentscape.errors import ConfigError, LatentscapeError, OutputError
from latentscape.farm.manifest import FarmFolder, job_key
from latentscape.farm.ship import Payload, pack_path, pack_scene
from latentscape.farm.worker import FarmWorker, WorkerSpec

log = logging.getLogger("latentscape.farm")

INSTALL_HINT = "pip install 'latentscape[farm]'"


class FarmError(LatentscapeError):
    """The farm cannot run (no Ray, no cluster) or a job ended with failed frames."""


@dataclass
class FarmJob:
    """One farm job: a scene, its camera path and render options, an OUT folder."""

    out: Path
    scene: Path | None = None
    camera_path: Path | None = None
    camera: str | None = None
    orbit: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    device: str = "cpu"
    backend: str | None = None
    stylize: bool = True
    stylizer: Path | None = None
    audit_log: Path | None = None
    force: bool = False
    exports: list[str] = field(default_factory=list)
    """Sink targets assembled from the frames at the end (``latentscape render --out`` forms)."""


@dataclass
class FarmReport:
    frames: int
    rendered: int
    skipped: int
    failed: dict[int, str]
    seconds: float
    per_worker: dict[str, int]
    exports: list[str]
    width: int = 0
    height: int = 0
    total_seconds: float = 0.0
    """From the call to the end of the exports, Ray's start and the workers' scene loading included."""
    timings: dict[str, float] = field(default_factory=dict)
    """Means per rendered frame, in ms: ``render`` and ``encode`` (on the worker), ``write``
    (the driver: checksum, frame and sidecar written and renamed, manifest)."""

    @property
    def fps(self) -> float:
        """Frames rendered per second of scheduling (the first frame sent to the last back)."""
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def import_ray():
    """``ray``, or a :class:`FarmError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FarmError("the render farm needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def normalize_address(address: str | None) -> str | None:
    """``auto``, ``ray://host:port`` (Ray Client) or ``HOST:PORT`` (a cluster's GCS); None
    starts a local Ray instance."""
    if address is None or address in ("", "local"):
        return None
    if address == "auto" or address.startswith("ray://"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address must be auto, ray://HOST:PORT or HOST:PORT, got {address!r}")
    return address


def _probe(address: str) -> None:
    """A TCP connect to HOST:PORT first: ray.init waits without a word, for a long time, for
    a head node that is not there."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except (OSError, ValueError) as err:
        raise FarmError(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}",
                        hint="start its head with `ray start --head`, check HOST:PORT (ray start prints it), "
                             "or leave --address out for a local instance") from None


def _connect(ray, address: str | None, workers: int, cpus: float, gpus: float) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address not in (None, "auto"):
        _probe(address)
    kw: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    if address is None:
        kw.update(include_dashboard=False, num_cpus=max(os.cpu_count() or 1, int(workers * cpus + 0.999)))
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        raise FarmError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0][:300]}",
                        hint="start one with `ray start --head` (token auth: set RAY_AUTH_TOKEN or ~/.ray/auth_token "
                             "as on the cluster), or leave --address out for a local instance") from None


def _check_capacity(ray, workers: int, cpus: float, gpus: float) -> None:
    total = ray.cluster_resources()
    for name, per in (("CPU", cpus), ("GPU", gpus)):
        if per and workers * per > total.get(name, 0) + 1e-9:
            flag = "--gpus-per-worker" if name == "GPU" else "--cpus-per-worker"
            raise FarmError(f"{workers} workers x {per:g} {name} need {workers * per:g} {name}s; the cluster has "
                            f"{total.get(name, 0):g}", hint=f"lower --workers or {flag}")


def job_identity(job: FarmJob, payloads: dict[str, Payload], shape: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``job``: what decides the frames' pixels (its ``key`` is their hash)."""
    ident = {"scene": str(job.scene) if job.scene else "demo", "scene_digest": payloads["scene"].digest,
             "camera_path": payloads["camera"].digest if "camera" in payloads else None,
             "camera": job.camera, "orbit": job.orbit, "width": shape["width"], "height": shape["height"],
             "fps": shape["fps"], "frames": shape["frames"], "device": job.device.split(":")[0],
             "backend": job.backend, "stylize": job.stylize,
             "stylizer": payloads["stylizer"].digest if "stylizer" in payloads else None}
    # --frames may grow between runs: the count is recorded but is not part of the key
    return {**ident, "key": job_key({k: v for k, v in ident.items() if k != "frames"})}


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def run_farm(job: FarmJob, *, address: str | None = None, workers: int | None = None, chunk: int = 8,
             cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, retries: int = 3, progress: bool = True,
             on_frame: Callable[[int, dict], None] | None = None) -> FarmReport:
    """Run ``job`` on Ray (``address`` as in :func:`normalize_address`) and assemble its
    exports when every frame is done. Raises :class:`FarmError` naming the frames that
    failed (after the rest of the job finished and was recorded)."""
    from latentscape.scene.bundle import demo_scene_path
    from latentscape.sinks import open_sink

    if chunk < 1 or retries < 0 or cpus_per_worker <= 0 or gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise ConfigError("--chunk and --workers must be >= 1, --retries and --gpus-per-worker >= 0, "
                          "--cpus-per-worker > 0")
    address = normalize_address(address)
    ray = import_ray()
    scene_dir = Path(job.scene) if job.scene is not None else demo_scene_path()
    payloads = {"scene": pack_scene(scene_dir)}
    if job.camera_path is not None:
        from latentscape.render.camera_path import load_camera_path

        load_camera_path(job.camera_path)  # a malformed path is reported here, naming the file
        payloads["camera"] = pack_path(job.camera_path)
    if job.stylizer is not None:
        payloads["stylizer"] = pack_path(job.stylizer)

    t_start = time.perf_counter()
    _connect(ray, address, workers or 1, cpus_per_worker, gpus_per_worker)
    try:
        for target in job.exports:  # an unwritable or existing export fails now, not after the render
            open_sink(target, overwrite=job.force or _ours(job, target))
        if workers is None:
            have = ray.cluster_resources()
            workers = int(have.get("GPU", 0) // gpus_per_worker) if gpus_per_worker else int(have.get("CPU", 1) // cpus_per_worker)
            workers = max(1, workers)
        _check_capacity(ray, workers, cpus_per_worker, gpus_per_worker)
        fields = {"scene": "scene", "camera": "camera_file", "stylizer": "stylizer"}
        refs = {fields[k]: [ray.put(p.data)] for k, p in payloads.items()}
        spec = WorkerSpec(scene=payloads["scene"].without_data(),
                          camera_file=payloads["camera"].without_data() if "camera" in payloads else None,
                          stylizer=payloads["stylizer"].without_data() if "stylizer" in payloads else None,
                          camera=job.camera, orbit=job.orbit, width=job.width, height=job.height, device=job.device,
                          backend=job.backend, stylize=job.stylize, threads=max(1, int(cpus_per_worker)))
        actor_cls = ray.remote(FarmWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                                   max_restarts=-1, max_task_retries=0)
        names = [f"w{i}" for i in range(workers)]
        actors = {name: actor_cls.remote(spec, name) for name in names}
        shape = _describe(ray, actors, refs)
        if job.frames is not None:
            shape["frames"] = min(shape["frames"], job.frames)
        if any(t.lower().endswith(".mp4") for t in job.exports) and (shape["width"] % 2 or shape["height"] % 2):
            raise OutputError(f"H.264 (yuv420p) needs an even width and height, got {shape['width']}x{shape['height']}",
                              path=next(t for t in job.exports if t.lower().endswith(".mp4")),
                              hint="choose an even size, or export PNGs")
        folder = FarmFolder(job.out)
        folder.prepare(job_identity(job, payloads, shape), force=job.force)
        report = _schedule(ray, actors, refs, folder, shape, chunk=chunk, retries=retries, progress=progress,
                           on_frame=on_frame, audit_log=job.audit_log)
    finally:
        ray.shutdown()
    if report.failed:
        folder.save()
        raise FarmError(_failed_message(report.failed), path=folder.manifest_path,
                        hint=f"`latentscape farm status {job.out}` lists them; run the command again to retry them")
    for target in job.exports:
        _export(folder, shape, target, overwrite=job.force or _ours(job, target))
        if target not in folder.exports:
            folder.exports.append(target)
    folder.save()
    report.exports = list(job.exports)
    report.total_seconds = time.perf_counter() - t_start
    report.width, report.height = shape["width"], shape["height"]
    return report


def _ours(job: FarmJob, target: str) -> bool:
    """An export this farm folder wrote before may be replaced by a rerun."""
    folder = FarmFolder(job.out)
    try:
        return folder.read() and target in folder.exports
    except OutputError:
        return False


def _failed_message(failed: dict[int, str]) -> str:
    items = sorted(failed.items())
    shown = "; ".join(f"frame {i}: {err}" for i, err in items[:3])
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return f"{len(items)} frame(s) failed after every retry: {shown}{more}"


def _describe(ray, actors: dict[str, Any], refs: dict[str, list[Any]]) -> dict[str, Any]:
    """Ask every worker what it loaded: they must agree; a load error stops the job."""
    names = list(actors)
    infos = ray.get([actors[n].describe.remote(refs) for n in names])
    for info in infos:
        if info.get("error"):
            raise FarmError(f"worker {info['worker']} on {info['host']} could not load the scene: {info['error']}")
    shapes = {(i["frames"], i["width"], i["height"], i["fps"], i["scene_version"]) for i in infos}
    if len(shapes) != 1:
        raise FarmError(f"workers disagree on the job's frames: {sorted(shapes)}",
                        hint="every node needs the same latentscape version")
    first = infos[0]
    return {k: first[k] for k in ("frames", "width", "height", "fps", "scene_version")}


def _schedule(ray, actors: dict[str, Any], refs: dict[str, list[Any]], folder: FarmFolder, shape: dict[str, Any], *, chunk: int, retries: int,
              progress: bool, on_frame, audit_log: Path | None) -> FarmReport:
    from tqdm import tqdm

    n = shape["frames"]
    todo, skipped = [], 0
    for i in range(n):
        rec = folder.record(i)
        sha = folder.verify(i)
        if sha is not None and rec.sha256 in (None, sha):
            if rec.status != "done":
                rec.status, rec.sha256, rec.error = "done", sha, None
            skipped += 1
            continue
        rec.status, rec.sha256 = "missing", None
        if rec.error is None or rec.attempts > retries:  # a rerun gives a failed frame its retries back
            rec.attempts, rec.tried = 0, None
        todo.append(i)
    for i in [k for k in folder.frames if k >= n]:
        del folder.frames[i]
    folder.save()

    queue: collections.deque[list[int]] = collections.deque(_chunks(todo, chunk))
    tried_by: dict[int, set[str]] = collections.defaultdict(set)
    idle = list(actors)
    running: dict[Any, tuple[str, list[int]]] = {}
    per_worker: dict[str, int] = collections.Counter()
    failed: dict[int, str] = {}
    rendered = 0
    sums: dict[str, float] = collections.Counter()
    audit_path = audit_log or folder.out / "audit.jsonl"
    bar = tqdm(total=len(todo), desc="farm", unit="frame", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()

    def fail(index: int, worker: str, error: str) -> None:
        rec = folder.record(index)
        rec.error = error
        tried_by[index].add(worker)
        rec.tried = [*(rec.tried or []), worker]
        if rec.attempts > retries:
            rec.status = "failed"
            failed[index] = error
            bar.update(1)
        else:
            queue.appendleft([index])

    def pick(batch: list[int]) -> str | None:
        """An idle worker for ``batch``. A retried frame waits for a worker that has not
        failed it, while there is one; then any worker may try it."""
        tried = tried_by.get(batch[0]) if len(batch) == 1 else None
        if not tried or all(w in tried for w in actors):
            return idle[0]
        return next((w for w in idle if w not in tried), None)

    try:
        while queue or running:
            for batch in list(queue):
                if not idle:
                    break
                name = pick(batch)
                if name is None:
                    continue
                queue.remove(batch)
                idle.remove(name)
                for i in batch:
                    folder.record(i).attempts += 1
                running[actors[name].render.remote(batch, refs)] = (name, batch)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                name, batch = running.pop(ref)
                idle.append(name)
                try:
                    results = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError) as err:
                    log.warning("worker %s died with frames %s: %s", name, batch, str(err).splitlines()[0])
                    for i in batch:
                        fail(i, name, f"worker {name} died: {type(err).__name__}")
                    continue
                for res in results:
                    i = res["index"]
                    rec = folder.record(i)
                    rec.worker, rec.host, rec.pid, rec.ms = res["worker"], res["host"], res["pid"], round(res["ms"], 2)
                    if not res["ok"]:
                        log.warning("frame %d failed on %s: %s", i, name, res["error"])
                        fail(i, name, res["error"])
                        continue
                    tw = time.perf_counter()
                    folder.write_frame(i, res["png"], res["sha256"])
                    rec.status, rec.sha256 = "done", res["sha256"]
                    if res["audit"]:
                        _append_audit(audit_path, res["audit"])
                    rendered += 1
                    per_worker[name] += 1
                    sums["render"] += res.get("render_ms", 0.0)
                    sums["encode"] += res.get("encode_ms", 0.0)
                    sums["write"] += (time.perf_counter() - tw) * 1000.0
                    bar.update(1)
                    bar.set_postfix_str(" ".join(f"{w}={per_worker[w]}" for w in sorted(per_worker)), refresh=False)
                    if on_frame is not None:
                        on_frame(i, res)
            ts = time.perf_counter()
            folder.save(every=0.25)
            sums["write"] += (time.perf_counter() - ts) * 1000.0
    finally:
        bar.close()
        folder.save()
    return FarmReport(frames=n, rendered=rendered, skipped=skipped, failed=failed, seconds=time.perf_counter() - t0,
                      per_worker=dict(per_worker), exports=[],
                      timings={k: v / rendered for k, v in sums.items()} if rendered else {})


def _append_audit(path: Path, records: Iterable[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")


def _export(folder: FarmFolder, shape: dict[str, Any], target: str, *, overwrite: bool) -> None:
    """Feed the verified frames, in order, to the sink ``latentscape render --out target`` would use."""
    import numpy as np
    from PIL import Image

    from latentscape.sinks import open_sink

    sink = open_sink(target, overwrite=overwrite)
    sink.open(shape["width"], shape["height"], shape["fps"])
    try:
        for i in range(shape["frames"]):
            if folder.verify(i) is None:
                raise OutputError(f"frame {i} changed on disk while exporting", path=folder.frame_path(i),
                                  hint="run the farm command again: it renders the frame anew")
            with Image.open(folder.frame_path(i)) as im:
                sink.write(np.asarray(im.convert("RGB")))
    except BaseException:
        sink.abort()
        raise
    sink.close()


def status(out: str | Path) -> dict[str, Any]:
    """``latentscape farm status``: the manifest, checked against the files on disk."""
    folder = FarmFolder(out)
    if not folder.read():
        raise OutputError("no manifest.json here", path=Path(out), hint="give the --out folder of a farm job")
    n = int(folder.job.get("frames", 0))
    done, missing, failed, corrupt = [], [], {}, []
    for i in range(n):
        rec = folder.frames.get(i)
        ok = folder.verify(i)
        if ok is not None and (rec is None or rec.sha256 in (None, ok)):
            done.append(i)
        elif rec is not None and rec.status == "failed":
            failed[i] = {"error": rec.error, "attempts": rec.attempts, "worker": rec.worker}
        else:
            missing.append(i)
            if rec is not None and rec.status == "done":
                corrupt.append(i)
    return {"out": str(folder.out), "job": folder.job, "frames": n, "done": done, "missing": missing,
            "failed": failed, "corrupt": corrupt, "exports": folder.exports}
