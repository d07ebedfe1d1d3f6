"""CLI subcommands: each module here defines ``register(app: typer.Typer)``.

The main app (:mod:`latentscape.tools.cli`) imports every module of this package
and calls its ``register``, so a new command is one new file.
"""
