"""``latentscape version``: print the version and the available compute backends."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version() -> None:
        """Print the latentscape and torch versions and whether CUDA is usable."""
        import torch

        import latentscape

        typer.echo(f"latentscape {latentscape.__version__}")
        typer.echo(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
