"""The ``latentscape`` command line: subcommands are discovered in ``tools/commands``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from latentscape.errors import LatentscapeError

app = typer.Typer(
    name="latentscape",
    help="Real-time neural rendering engine for generative art.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Real-time neural rendering engine for generative art."""


def _register_commands() -> None:
    from latentscape.tools import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; typed latentscape errors become one message and a non-zero exit.

    Usage errors are reported by typer (exit 2). A :class:`LatentscapeError` is
    printed without a traceback and exits with its ``exit_code``. SIGTERM exits with
    143 and SIGINT (Ctrl-C) with 130, after every output being written is removed
    (:mod:`latentscape.interrupts`).
    """
    from latentscape import interrupts

    interrupts.install()  # SIGTERM -> exit 143, SIGINT -> 130; partial outputs are removed on the way out
    try:
        app(args=argv, prog_name="latentscape")
    except LatentscapeError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        # typer turns a Ctrl-C inside a command into exit 130; one that lands outside it gets the same
        sys.exit(130)


if __name__ == "__main__":
    main()
