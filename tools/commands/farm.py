"""``latentscape farm render SCENE --out OUT``: a camera path rendered on a Ray cluster;
``latentscape farm status OUT``: what a farm folder holds (docs/farm.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from latentscape.tools.render_options import RenderOptions, render_options

farm_app = typer.Typer(name="farm", help="Render farm on Ray: camera paths split across workers and machines.",
                       no_args_is_help=True)

FarmOut = Annotated[Path, typer.Option("--out", "-o", help="The farm folder: frames/, their .sha256 sidecars and manifest.json. Run the same command again to resume.")]


@farm_app.command("render")
@render_options(out=FarmOut)
def farm_render(
    opts: RenderOptions,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the head's GCS). Default: start a local Ray instance.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray actors to run (default: as many as the cluster's CPUs, or GPUs with --gpus-per-worker, allow).")] = None,
    chunk: Annotated[int, typer.Option(help="Frames per task.")] = 8,
    cpus_per_worker: Annotated[float, typer.Option(help="Ray num_cpus of each worker (also its torch threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="Ray num_gpus of each worker (use with --device cuda).")] = 0.0,
    retries: Annotated[int, typer.Option(help="Tries a failing frame gets after its first, on other workers when there are any.")] = 3,
    export: Annotated[Optional[list[str]], typer.Option(help="Assemble the frames into this target when all are done (any `render --out` form: OUT.mp4, a PNG folder, DIR/stream.m3u8); repeatable. Default: OUT/render.mp4.")] = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="Keep only the frames folder.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    track: Annotated[bool, typer.Option("--track", help="Log an MLflow run (params, scene digests, frames/s, per-frame timings, the manifest and the assembled MP4); also LATENTSCAPE_TRACK=1.")] = False,
) -> None:
    """Render a camera path on a Ray cluster: chunks of frames run on workers that keep
    the scene loaded (shipped by its scene.lock digest, never by a path). Frames are
    written atomically with sha256 sidecars into OUT and recorded in OUT/manifest.json; a
    rerun renders only missing or corrupt frames. Every frame is byte-identical to
    `latentscape render` of that frame run with the workers' thread count (--cpus-per-worker). A frame that keeps failing is reported by
    number after the rest of the job finished (non-zero exit)."""
    from latentscape.farm import FarmJob, import_ray, run_farm

    from latentscape import tracking

    import_ray()  # says how to install Ray before anything else
    opts.check()
    tracked = tracking.wanted(track)
    if tracked:
        tracking.client()  # a missing extra or a bad URI fails before any work
    out = Path(opts.out)
    exports = [] if no_export else list(export or [str(out / "render.mp4")])
    job = FarmJob(out=out, scene=opts.scene, camera_path=opts.camera_path, camera=opts.camera, orbit=opts.orbit,
                  width=opts.width, height=opts.height, frames=opts.frames, device=opts.device, backend=opts.backend,
                  stylize=opts.stylize, stylizer=opts.stylizer, audit_log=opts.audit_log, force=opts.force,
                  exports=exports)
    report = run_farm(job, address=address, workers=workers, chunk=chunk, cpus_per_worker=cpus_per_worker,
                      gpus_per_worker=gpus_per_worker, retries=retries, progress=progress)
    per = ", ".join(f"{w}: {k}" for w, k in sorted(report.per_worker.items())) or "none"
    typer.echo(f"wrote {out} ({report.frames} frames, {report.width}x{report.height}; rendered {report.rendered}, "
               f"already done {report.skipped}; {report.fps:.2f} frames/s, {report.total_seconds:.1f} s in all; "
               f"per worker {per})")
    for target in report.exports:
        typer.echo(f"assembled {target}")
    if tracked:
        _track(opts, report, out, address=address, workers=workers, chunk=chunk)


def _track(opts: RenderOptions, report, out: Path, **farm) -> None:
    """One MLflow run for a finished farm job (the frames are on disk; the run records them)."""
    from latentscape import tracking
    from latentscape.scene.bundle import demo_scene_path

    scene = Path(opts.scene) if opts.scene is not None else demo_scene_path()
    params = {"scene": str(scene), "out": str(out), "camera": opts.camera, "orbit": opts.orbit,
              "width": report.width, "height": report.height, "frames": report.frames, "device": opts.device,
              "backend": opts.backend, "stylize": opts.stylize, "stylizer": opts.stylizer, **farm}
    tags = tracking.scene_tags(scene)
    if opts.stylizer is not None:
        tags.update(tracking.file_tags([opts.stylizer], prefix="sha256:stylizer/"))
    with tracking.run("farm render", True, params=params, tags=tags) as run:
        run.metrics({"frames": report.frames, "rendered": report.rendered, "skipped": report.skipped,
                     "fps": report.fps, "total_seconds": report.total_seconds,
                     **{f"frame_ms.{k}": v for k, v in report.timings.items()}})
        if (out / "manifest.json").is_file():
            run.file(out / "manifest.json")
        for target in report.exports:
            if str(target).endswith(".mp4") and Path(target).is_file():
                run.file(target)
        typer.echo(f"tracked: run {run.id} at {tracking.tracking_uri()}")


@farm_app.command("status")
def farm_status(
    out: Annotated[Path, typer.Argument(help="A farm folder (the --out of farm render).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """What a farm folder holds: frames done (verified against their sidecars), missing,
    and failed with their reasons. Exits 1 while the job is incomplete."""
    import json

    from latentscape.farm import status

    st = status(out)
    if as_json:
        typer.echo(json.dumps(st, indent=1, default=str))
    else:
        job = st["job"]
        typer.echo(f"{st['out']}: {job.get('scene')} ({job.get('width')}x{job.get('height')}, key {job.get('key')})")
        typer.echo(f"  frames {st['frames']}: done {len(st['done'])}, missing {len(st['missing'])}, "
                   f"failed {len(st['failed'])}")
        if st["missing"]:
            typer.echo(f"  missing: {_ranges(st['missing'])}"
                       + (f" (on disk but failing their checksum: {_ranges(st['corrupt'])})" if st["corrupt"] else ""))
        for i, f in sorted(st["failed"].items()):
            typer.echo(f"  failed frame {i} after {f['attempts']} attempts (last on {f['worker']}): {f['error']}")
        for target in st["exports"]:
            typer.echo(f"  assembled: {target}")
    if st["missing"] or st["failed"]:
        sys.exit(1)


def _ranges(xs: list[int]) -> str:
    out, start = [], None
    for k, x in enumerate(xs):
        if start is None:
            start = x
        if k + 1 == len(xs) or xs[k + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


def register(app: typer.Typer) -> None:
    app.add_typer(farm_app, name="farm")
