"""The ``brittle`` command line: a thin layer over the Python API.

Exit codes: 0 success (and ``--help``); 1 an unexpected internal error (a bug: one line, ``--debug`` for the
traceback); 2 invalid input, model or settings, and usage errors (unknown
command or option, missing option: one line); 3 the output directory cannot be used (another run, unwritable,
disk full); 130 interrupted (Ctrl-C: finished batches are kept, re-running resumes); 141 the reader of the
output went away (``brittle zoo list | head -1``: no message, like any Unix tool). ``--debug`` shows
tracebacks.

The command tree is built by typer but run here through click's public ``make_context`` / ``invoke``, and
every exception is sorted by what it is (typer's and click's classes moved between releases: typer 0.29
vendors its own click), so the exit codes and one-line messages hold under every typer/click version.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any, Optional

import typer

from .._version import __version__
from ..errors import BrittleError, StoreError
from ._common import State, err_console, safe_text

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_STORE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 3, 130, 141

app = typer.Typer(help="brittle: detect brittle decisions of PyTorch classifiers for free.",
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def _version_callback(value: bool) -> None:
    if value:
        print(f"brittle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
          as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          threads: Optional[int] = typer.Option(None, "--threads", metavar="N", show_default=False,
                                      help="CPU threads for torch (default: the cores free now; also "
                                           "BRITTLE_NUM_THREADS; an OMP_NUM_THREADS you set is kept).")) -> None:
    from ..core.threads import configure_cli_threads

    State.quiet, State.as_json = quiet or as_json, as_json
    State.threads = configure_cli_threads(threads)[0]


#: One module per command (or command group), each with ``register(app)``; a new command is a new module here.
COMMAND_MODULES = ("zoo", "margins", "audit", "demo", "train", "explain", "adapt", "ood", "llm")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).register(app)


_register_commands()


# --------------------------------------------------------------------------------------------
# the click command tree
# --------------------------------------------------------------------------------------------

def command_tree() -> Any:
    """The click command built from `app`, tidied for plain help and uniform usage errors.

    Every group (also those of command modules added later) reports a missing sub-command as a usage error
    (exit 2, with its help), whatever the installed click does with ``no_args_is_help``; help is click's
    plain layout (no rich panels, no ``<bool>`` labels on flags, an option's value is named after the
    option, ``--model MODEL``, not typed ``<str>``, and an argument shows its name, ``RUN_DIR``, not
    ``run_dir <path>``).
    """
    root = typer.main.get_command(app)
    for cmd in iter_commands(root):
        if hasattr(cmd, "rich_markup_mode"):
            cmd.rich_markup_mode = None
        plain = _plain_format_help(type(cmd))
        if plain is not None:  # typer < 0.2x renders rich panels whatever rich_markup_mode says
            cmd.format_help = plain.__get__(cmd)
        if hasattr(cmd, "commands"):  # a group
            cmd.no_args_is_help = False
            cmd.invoke_without_command = False
        for param in getattr(cmd, "params", []):
            kind = getattr(param, "param_type_name", "")
            if kind == "argument" and param.name and not _has_choices(param):
                _name_argument(param)
            if getattr(param, "metavar", None) is not None or kind != "option":
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""  # typer >= 0.2x labels flags '<bool>'
            elif param.name and not _has_choices(param):
                param.metavar = param.name.upper()  # '--model MODEL' (argparse's style), not typer's '<str>'
    return root


def _name_argument(param: Any) -> None:
    """Show an argument by its name in the usage line and its help row, as click does: ``RUN_DIR``, ``[NAME]``
    when optional, ``PROMPT...`` when it takes several. typer >= 0.2x labels the row with its type instead
    (``run_dir <path>``, ``PROMPT <list[str]>``) and the usage ``{RUN_DIR}``; a metavar alone does not remove the
    type there, and with click 8.0 it drops the ``...`` of a variadic argument, so both methods are replaced."""
    if getattr(param, "metavar", None) is None:
        param.metavar = param.name.upper()  # also names it in click's errors: "Missing argument 'RUN_DIR'"
    label = param.metavar if param.required else f"[{param.metavar}]"
    if param.nargs != 1:
        label += "..."
    help_record = param.get_help_record

    def get_help_record(ctx: Any) -> Any:
        record = help_record(ctx)
        return None if record is None else (label, record[1])

    param.get_help_record = get_help_record
    param.get_usage_pieces = lambda ctx: [label]


def _has_choices(param: Any) -> bool:
    """Whether help lists the option's choices (click's ``Choice``, an ``Enum`` or ``Literal`` annotation):
    those keep their ``[a|b]`` label. (typer >= 0.29's own click keeps no ``.type`` on a parameter.)"""
    import enum
    import typing

    if hasattr(getattr(param, "type", None), "choices"):
        return True
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return typing.get_origin(annotation) is typing.Literal or (
        isinstance(annotation, type) and issubclass(annotation, enum.Enum))


def _plain_format_help(cls: type) -> Any:
    """click's own ``format_help`` from the class hierarchy (typer's subclasses override it)."""
    for base in cls.__mro__:
        if base.__module__.startswith(("click.", "typer._click.")) and "format_help" in vars(base):
            return vars(base)["format_help"]
    return None


def iter_commands(cmd: Any, path: tuple[str, ...] = ()) -> Any:
    """Yield every command of the tree (depth first), the root first; each gets ``.brittle_path``."""
    cmd.brittle_path = path
    yield cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from iter_commands(sub, (*path, name))


# --------------------------------------------------------------------------------------------
# sorting exceptions (names moved between typer/click releases)
# --------------------------------------------------------------------------------------------

def _classes(name: str) -> tuple[type, ...]:
    found = []
    for module in ("typer", "typer.exceptions", "typer._click.exceptions", "click.exceptions"):
        try:
            mod = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


_EXIT, _ABORT, _CLICK_ERROR = _classes("Exit"), _classes("Abort"), _classes("ClickException")


def _is_click_error(exc: BaseException) -> bool:
    return isinstance(exc, _CLICK_ERROR) or (
        hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)
        and any(c.__name__ == "ClickException" for c in type(exc).__mro__))


def _usage_line(exc: Any) -> tuple[str, str | None]:
    """A click error as ``(problem, help text to show first or None)``."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "brittle"
    message = " ".join(str(exc.format_message()).split())
    if type(exc).__name__ == "NoArgsIsHelpError" or message.lower().rstrip(".") == "missing command":
        return f"missing command. Fix: add one of the commands listed above to '{path}'", \
            (ctx.get_help() if ctx is not None else None)
    if message.startswith("Usage:"):  # a help text raised as an error by some click versions
        return f"invalid usage of '{path}'. Fix: see '{path} --help'", message
    message = message.rstrip(".")
    return f"{message}{'' if message.endswith('?') else '.'} Fix: see '{path} --help'", None


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

_GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--debug")
_GLOBAL_VALUE_OPTIONS = ("--threads",)


def _hoist_global_options(args: list[str]) -> list[str]:
    """Global flags and ``--threads N`` are accepted anywhere on the line: move them to the front."""
    front, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i:])
            break
        if a in _GLOBAL_FLAGS or any(a.startswith(o + "=") for o in _GLOBAL_VALUE_OPTIONS):
            front.append(a)
        elif a in _GLOBAL_VALUE_OPTIONS and i + 1 < len(args):
            front.extend(args[i:i + 2])
            i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def _silence_pipes() -> None:
    """After EPIPE: point stdout/stderr at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
    except OSError:
        pass


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def _error(line: str) -> None:
    from rich.text import Text

    # the message names paths, columns and library errors (torch's hold ANSI codes): printed literally
    err_console.print(Text.assemble(("error:", "bold red"), " ", safe_text(line)), highlight=False, soft_wrap=True)


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                      line: Any = None) -> None:
    """Python warnings as one ``warning: …`` line (the file and line number only with ``--debug``)."""
    from rich.text import Text

    text = " ".join(str(message).split())
    err_console.print(Text.assemble(("warning:", "bold yellow"), " ", safe_text(text)), highlight=False,
                      soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn every failure into one line on stderr and an exit code (see the module docstring)."""
    import warnings

    args = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    with warnings.catch_warnings():
        if not debug:  # libraries' deprecation notices are for developers, not for users of the command line
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.showwarning = _one_line_warning
        return _run(args, debug)


#: the commands that keep their finished batches in a run store, so that re-running them resumes
RESUMABLE = frozenset({"margins", "audit", "ood", "adapt", "train", "finetune", "demo"})


def _command_name(args: list[str]) -> str | None:
    """The subcommand of a command line (the first word that is neither an option nor an option's value)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--threads",):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _run(args: list[str], debug: bool) -> int:
    try:
        try:
            root = command_tree()
            with root.make_context("brittle", args) as ctx:
                root.invoke(ctx)
            sys.stdout.flush()
            return EXIT_OK
        except _EXIT as exc:
            sys.stdout.flush()
            return int(getattr(exc, "exit_code", 0) or 0)
    except BrittleError as exc:
        if debug:
            raise
        _error(str(exc))
        return EXIT_STORE if isinstance(exc, StoreError) else EXIT_INPUT
    except (KeyboardInterrupt, *_ABORT) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the one-line exit
        if debug and not isinstance(exc, KeyboardInterrupt):
            raise
        message = ("interrupted: finished batches are saved; re-run the same command to resume"
                   if _command_name(args) in RESUMABLE else
                   "interrupted: this command keeps no partial results; re-running it starts again")
        err_console.print(message, highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except EOFError:
        _error("end of input while reading from stdin. Fix: pass the value as an option")
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - sorted below; anything else is re-raised
        if _is_broken_pipe(exc):
            _silence_pipes()
            return EXIT_PIPE
        if _is_click_error(exc):
            line, help_text = _usage_line(exc)
            if help_text:
                err_console.print(safe_text(help_text.rstrip()), highlight=False, soft_wrap=True)
                err_console.print()
            _error(line)
            return int(getattr(exc, "exit_code", EXIT_INPUT) or EXIT_INPUT)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _error(f"unexpected {type(exc).__name__}: {first}. Fix: this is a bug in brittle or a library it uses; "
               "re-run with --debug for the traceback and report it")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
