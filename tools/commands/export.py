"""``latentscape export SCENE --target onnx|onnx-int8|tensorrt --out DIR``: kiosk exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")] = None,
        target: Annotated[str, typer.Option("--target", "-t", help="onnx, onnx-int8 or tensorrt.")] = "onnx",
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (student.onnx, gan-*.onnx, export.json).")] = Path("export"),
        calibration: Annotated[int, typer.Option(help="onnx-int8: camera-path frames to calibrate with (as many again measure the drop).")] = 8,
        student_only: Annotated[bool, typer.Option("--student-only", help="Export only the stylizer, not the generators.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    ) -> None:
        """Export the scene's student stylizer and GAN synthesis network to ONNX (fp32 or int8)
        for small kiosk machines; each export is checked against torch (export.json)."""
        from latentscape.errors import ConfigError
        from latentscape.export import check_target, export_scene

        check_target(target)
        if calibration < 1:
            raise ConfigError(f"--calibration must be positive, got {calibration}")
        if scene is None:
            from latentscape.scene.bundle import demo_scene_path

            scene = demo_scene_path()
        parts = ("student",) if student_only else ("student", "generators")
        report = export_scene(scene, target, out, force=force, calibration=calibration, parts=parts,
                              log=typer.echo)
        models = ", ".join(v["file"] for v in report["models"].values() if "file" in v)
        typer.echo(f"wrote {out}: {models} (export.json has the checks)")
        for k, v in report["skipped"].items():
            typer.echo(f"note: {k} not exported: {v}")
