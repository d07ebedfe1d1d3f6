"""``latentscape eval [SCENE]``: held-out PSNR of a scene on its held-out views."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle (default: the demo scene).")] = None,
        data: Annotated[Optional[Path], typer.Option(help="Dataset to evaluate on (default: the bundle's heldout/).")] = None,
        split: Annotated[str, typer.Option(help="Split of --data to use: test, val or train.")] = "test",
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        backend: Annotated[Optional[str], typer.Option(help="auto, torch, triton or tcnn.")] = None,
    ) -> None:
        """Render the held-out views of a scene and report PSNR against the real images."""
        from latentscape.dataset import load_dataset
        from latentscape.errors import DatasetError
        from latentscape.scene import load_scene
        from latentscape.training import evaluate

        sc = load_scene(scene, device=device, backend=backend)
        ds = load_dataset(data or sc.path / "heldout", require_train=False)
        frames = ds.split(split)
        if not frames:
            raise DatasetError(f"no frames in split {split!r}", path=ds.root / "transforms.json")
        res = evaluate(sc.field, sc.grid, sc.render_config, frames, sc.center, sc.scale, sc.background, progress=True)
        typer.echo(f"{sc.name}: PSNR {res['psnr']:.2f} dB over {res['views']} {split} views "
                   f"({frames[0].camera.width}x{frames[0].camera.height}, background {list(sc.background)})")
