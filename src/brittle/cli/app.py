"""The ``brittle`` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 invalid input, model or settings (one-line message); 3 the output directory
cannot be used (another run, unwritable, disk full); 130 interrupted. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import sys

import typer

from .._version import __version__
from ..errors import BrittleError, StoreError
from ._common import State, err_console

try:  # recent typer vendors click; older releases use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

EXIT_INPUT, EXIT_STORE, EXIT_INTERRUPTED = 2, 3, 130

app = typer.Typer(help="brittle: detect brittle decisions of PyTorch classifiers for free.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)



def _version_callback(value: bool) -> None:
    if value:
        print(f"brittle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
          as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    State.quiet, State.as_json = quiet or as_json, as_json


#: One module per command (or command group), each with ``register(app)``; a new command is a new module here.
COMMAND_MODULES = ("zoo", "margins", "audit", "demo", "train")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).register(app)


_register_commands()


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

_GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--debug")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn brittle's errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in args if a in _GLOBAL_FLAGS]  # global flags are accepted anywhere on the line
    args = flags + [a for a in args if a not in _GLOBAL_FLAGS]
    debug = "--debug" in args
    try:
        app(args=args, prog_name="brittle", standalone_mode=False)
    except BrittleError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_STORE if isinstance(exc, StoreError) else EXIT_INPUT
    except click_exceptions.Exit as exc:
        return exc.exit_code
    except click_exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, click_exceptions.Abort):
        err_console.print("interrupted: finished batches are saved; re-run the same command to resume")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
