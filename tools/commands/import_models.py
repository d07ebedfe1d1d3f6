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
    ) -> None:
        """Convert a StyleGAN3 pickle with a restricted unpickler (no code from the file runs)."""
        from latentscape.config import check_number
        from latentscape.texture.pickle_import import import_stylegan3

        max_gb = check_number(max_gb, name="--max-gb", low=0, high=1024, low_open=True)
        G = import_stylegan3(network, out, key=key, max_bytes=int(max_gb * 2**30))
        cfg = G.cfg
        typer.echo(f"imported {network} [{key}] -> {out}: {cfg.img_resolution}x{cfg.img_resolution}, "
                   f"z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, num_ws {cfg.num_ws}, "
                   f"{'R' if cfg.use_radial_filters else 'T'} config")

    app.add_typer(group, name="import")
