"""``latentscape compare RUN_A RUN_B --out DIR``: two tracked runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        run_a: Annotated[str, typer.Argument(help="MLflow run id (as `--track` printed it).")],
        run_b: Annotated[str, typer.Argument(help="MLflow run id to compare with RUN_A.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for compare.png and compare.json.")] = Path("compare"),
        force: Annotated[bool, typer.Option("--force", help="Replace an existing --out written by latentscape.")] = False,
    ) -> None:
        """Write a side-by-side sheet of the images both runs logged and the metric deltas (B - A).
        Runs are read from MLFLOW_TRACKING_URI (default ./mlruns)."""
        from latentscape import tracking

        report = tracking.compare(run_a, run_b, out, force=force)
        for k, v in report["metrics"].items():
            typer.echo(f"{k:32s} {v['a']:12.4g} -> {v['b']:12.4g}  ({v['delta']:+.4g})")
        typer.echo(f"wrote {out / 'compare.json'}" + (f" and {report['sheet']}" if report.get("sheet") else
                                                        " (no image both runs logged)"))
