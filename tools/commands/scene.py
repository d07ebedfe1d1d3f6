"""``latentscape scene lock|verify|info DIR``: manage scene bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

scene_app = typer.Typer(help="Manage scene bundles (scene.toml + assets + scene.lock).", no_args_is_help=True)


@scene_app.command("lock")
def lock(path: Annotated[Path, typer.Argument(help="Scene bundle folder.")]) -> None:
    """Write scene.lock: the sha256 of every file of the bundle."""
    from latentscape.scene.lock import write_lock

    out = write_lock(path)
    typer.echo(f"wrote {out}")


@scene_app.command("verify")
def verify(path: Annotated[Path, typer.Argument(help="Scene bundle folder.")]) -> None:
    """Check every file of the bundle against scene.lock."""
    from latentscape.scene.lock import verify_lock

    version = verify_lock(path)
    typer.echo(f"ok: {path} (scene version {version})")


@scene_app.command("info")
def info(path: Annotated[Path, typer.Argument(help="Scene bundle folder.")]) -> None:
    """Print what a scene is made of."""
    from latentscape.scene import load_scene

    sc = load_scene(path)
    typer.echo(f"{sc.name} (version {sc.version}) at {sc.path}")
    if sc.grid is None:  # an imported nerfacto field (proposal sampler, no occupancy grid)
        c = sc.field.config
        ns = sc.config.get("field", {}).get("nerfstudio", {})
        typer.echo(f"  field: nerfacto imported from nerfstudio (step {ns.get('step', '?')}), {c.implementation} hash grid "
                   f"{c.num_levels} levels x 2^{c.log2_hashmap_size}, proposal samples {c.num_proposal_samples_per_ray} + "
                   f"{c.num_nerf_samples_per_ray}, appearance {c.appearance}, backend {sc.backend}")
    else:
        typer.echo(f"  field: {sc.field.layout.n_levels} levels x {sc.field.layout.n_features_per_level} features, "
                   f"{sc.field.layout.n_params} grid parameters, backend {sc.backend}")
        typer.echo(f"  occupancy: {sc.grid.occupancy_fraction():.3f} of {sc.grid.levels}x{sc.grid.resolution}^3 cells")
    typer.echo(f"  default size {sc.width}x{sc.height} at {sc.fps} fps; camera paths: {', '.join(sc.camera_paths) or 'none'}")


def register(app: typer.Typer) -> None:
    app.add_typer(scene_app, name="scene")
