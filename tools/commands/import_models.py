"""``latentscape import ...``: convert foreign model files once, never running code they carry."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Convert foreign model files into latentscape folders (safetensors + json).",
                        no_args_is_help=True)

    @group.callback()
    def _import() -> None:
        """Convert foreign model files into latentscape folders (safetensors + json)."""

    @group.command("stylegan3")
    def stylegan3(
        network: Path = typer.Argument(..., help="Official StyleGAN3 network pickle (network-snapshot-*.pkl)."),
        out: Path = typer.Option(..., "--out", help="Output folder: generator.safetensors + generator.json."),
        key: str = typer.Option("G_ema", "--key", help="Which network of a training snapshot to take."),
        max_gb: float = typer.Option(2.0, "--max-gb", help="Refuse files larger than this (GiB)."),
        force: bool = typer.Option(False, "--force", help="Replace an --out folder an earlier import wrote."),
    ) -> None:
        """Convert a StyleGAN3 pickle with a restricted unpickler (no code from the file runs).

        The folder appears complete or not at all (a failure or a full disk leaves nothing)."""
        from latentscape.config import check_number
        from latentscape.outputs import staged
        from latentscape.texture.pickle_import import import_stylegan3

        max_gb = check_number(max_gb, name="--max-gb", low=0, high=1024, low_open=True)
        with staged(out, kind="dir", force=force, command="import stylegan3") as tmp:
            G = import_stylegan3(network, tmp, key=key, max_bytes=int(max_gb * 2**30))
        cfg = G.cfg
        typer.echo(f"imported {network} [{key}] -> {out}: {cfg.img_resolution}x{cfg.img_resolution}, "
                   f"z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, num_ws {cfg.num_ws}, "
                   f"{'R' if cfg.use_radial_filters else 'T'} config")

    @group.command("nerfstudio")
    def nerfstudio(
        run: Path = typer.Argument(..., help="nerfstudio run folder: config.yml, dataparser_transforms.json, nerfstudio_models/step-*.ckpt."),
        out: Path = typer.Option(..., "--out", help="Output scene bundle folder (scene.toml, field.safetensors, scene.lock)."),
        step: int = typer.Option(None, "--step", help="Checkpoint step to import (default: the latest)."),
        appearance: str = typer.Option(None, "--appearance",
                                       help="Appearance embedding to render with: mean, zeros, or a training-image index "
                                            "(default: what ns-render uses, the mean unless the run turned it off)."),
        camera_path: list[Path] = typer.Option(None, "--camera-path",
                                               help="nerfstudio camera_path.json to carry as a named camera path (repeatable; the first is the default)."),
        force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    ) -> None:
        """Import a trained nerfacto scene (nerfstudio 1.1.5): no code from the run folder runs."""
        from latentscape.scene import load_scene
        from latentscape.scene.nerfstudio import import_nerfstudio

        path = import_nerfstudio(run, out, step=step, appearance=appearance, overwrite=force, camera_paths=camera_path)
        sc = load_scene(path, backend="torch")
        c = sc.field.config
        n = sum(t.numel() for t in sc.field.state_dict().values())
        typer.echo(f"imported {run} -> {path}: nerfacto ({c.implementation} hash grid, {c.num_levels} levels x 2^{c.log2_hashmap_size}), "
                   f"{c.num_proposal_iterations} proposal rounds {c.num_proposal_samples_per_ray} + {c.num_nerf_samples_per_ray} samples, "
                   f"appearance {c.appearance}, {n} parameters, version {sc.version}")

    app.add_typer(group, name="import")
