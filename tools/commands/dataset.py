"""``latentscape dataset``: build posed multi-view datasets.

``dataset demo`` renders the demo scene's; ``dataset blender --mesh FILE`` renders any mesh file the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="Build posed multi-view datasets (transforms.json + images).",
                              no_args_is_help=True)

    @dataset_app.command("demo")
    def demo(
        out: Path = typer.Option(..., "--out", help="Output folder (transforms.json, images/, blender.log)."),
        size: int = typer.Option(128, "--size", help="Image width and height in pixels."),
        train: int = typer.Option(100, "--train", help="Number of training views."),
        val: int = typer.Option(10, "--val", help="Number of validation views."),
        test: int = typer.Option(10, "--test", help="Number of test views."),
        samples: int = typer.Option(32, "--samples", help="Cycles samples per pixel."),
        seed: int = typer.Option(0, "--seed", help="Seed for the camera poses and Cycles noise."),
        blender: Optional[str] = typer.Option(None, "--blender", help="blender executable (default: on PATH)."),
        asset: Optional[Path] = typer.Option(None, "--asset", help="Asset to render (default: CesiumMilkTruck)."),
        hdri: Optional[Path] = typer.Option(None, "--hdri", help="HDRI .exr (default: blender-data courtyard)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Cycles render threads (default: all)."),
        force: bool = typer.Option(False, "--force", help="Replace --out if latentscape wrote it."),
    ) -> None:
        """Render the demo dataset from a real asset with blender (Cycles, CPU); takes minutes.

        Needs Debian's blender and assimp-testmodels:
        apt-get install -y --no-install-recommends blender assimp-testmodels
        """
        from latentscape.tools.demo_dataset import build_demo_dataset

        path = build_demo_dataset(out, size=size, n_train=train, n_val=val, n_test=test, samples=samples,
                                  seed=seed, blender=blender, asset=asset, hdri=hdri, threads=threads, force=force)
        typer.echo(f"wrote {path} ({train + val + test} views, {size}x{size})")

    @dataset_app.command("blender")
    def blender_mesh(
        mesh: Path = typer.Option(..., "--mesh", help="Mesh file: glTF/GLB, Collada, OBJ, PLY, STL, FBX, or any "
                                  "format trimesh reads (.off, ...), converted to PLY first."),
        out: Path = typer.Option(..., "--out", help="Output folder (transforms.json, images/, blender.log)."),
        size: int = typer.Option(128, "--size", help="Image width and height in pixels."),
        train: int = typer.Option(100, "--train", help="Number of training views."),
        val: int = typer.Option(10, "--val",
                                help="Number of validation views (0: val_filenames lists the test views)."),
        test: int = typer.Option(10, "--test", help="Number of test views."),
        samples: int = typer.Option(32, "--samples", help="Cycles samples per pixel."),
        seed: int = typer.Option(0, "--seed", help="Seed for the camera poses and Cycles noise."),
        blender: Optional[str] = typer.Option(None, "--blender", help="blender executable (default: on PATH)."),
        hdri: Optional[Path] = typer.Option(None, "--hdri", help="HDRI .exr (default: blender-data courtyard)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Cycles render threads (default: all)."),
        force: bool = typer.Option(False, "--force", help="Replace --out if latentscape wrote it."),
    ) -> None:
        """Render a posed dataset of any mesh file with blender (Cycles, CPU), as `dataset demo` does.

        The mesh is centred and scaled to about [-1, 1]^3, lit by an HDRI, and seen from
        seeded cameras around it; images are RGBA with a transparent background.
        """
        from latentscape.tools.demo_dataset import build_demo_dataset

        path = build_demo_dataset(out, size=size, n_train=train, n_val=val, n_test=test, samples=samples,
                                  seed=seed, blender=blender, asset=mesh, hdri=hdri, threads=threads, force=force)
        typer.echo(f"wrote {path} ({train + val + test} views, {size}x{size})")

    app.add_typer(dataset_app, name="dataset")
