"""Shared pieces of the command modules: output state, printing, parsing, loading the model and data."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.serialize import json_default, jsonable

console = Console()
err_console = Console(stderr=True)


#: C0 and C1 control characters (ESC, BEL, CR, backspace, CSI, …) and DEL; newline and tab are kept
#: C0/C1 controls and DEL (but tab and newline), and the bidirectional overrides and isolates that make a terminal
#: show text in another order than it is stored ("Trojan Source", CVE-2021-42574)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(value: Any, style: str = "") -> Text:
    """``str(value)`` as a rich ``Text`` shown literally: never read as markup (``[/bold]``, ``[link=…]``), emoji
    codes or highlighted, and without control characters (but newline and tab), which would reach the terminal
    raw (clearing it, setting its title, hyperlinks), nor bidirectional overrides, which reorder what it shows. For every data-derived string the CLI prints: feature,
    class, set, model and file names, paths, model output."""
    return Text(_CONTROL.sub("", str(value)), style=style)


class State:
    quiet = False
    as_json = False
    threads: int | None = None  # set by the root callback (--threads / BRITTLE_NUM_THREADS / automatic)


def emit(payload: dict[str, Any], table: Table | None = None) -> None:
    """Print a result: strict JSON with ``--json`` (non-finite numbers as ``null``, as in summary.json), else the
    rich table unless ``--quiet``."""
    if State.as_json:
        print(json.dumps(jsonable(payload), indent=2, default=json_default))
    elif table is not None and not State.quiet:
        console.print(table)



def parse_floats(text: str, what: str = "eps") -> list[float]:
    """``"0.1,0.2"`` or ``"8/255,16/255"`` → floats; a clear error for anything that is not a number or a
    simple fraction (ranges are checked by the API, e.g. ε > 0)."""
    from ..core.validation import parse_number
    from ..errors import InputError

    if not text.strip():  # e.g. --eps "$EPS" with the variable unset: refused, never read as "not given"
        raise InputError(f"--{what} is empty", f"pass numbers or fractions like --{what} 0.1,8/255, or leave "
                                               f"--{what} out for the default")
    values = []
    for part in text.split(","):
        try:
            values.append(parse_number(part, f"--{what} value"))
        except InputError:
            raise InputError(f"--{what} value {part!r} is not a number",
                             f"pass numbers or fractions like --{what} 0.1,8/255") from None
    return values


WEIGHTS = typer.Option(None, help="State-dict checkpoint (e.g. a fine-tuned model.pt) to load into the model: "
                                   "a zoo name, module:factory, torchvision:, timm: or robustbench: (keys and "
                                   "shapes must fit).")
TRUST_MODEL = typer.Option(False, "--trust-model",
                           help="Load a torch.export archive (.pt2), which torch unpickles in part: only for a file you "
                                "made or whose source you trust.")
DATA_ROOT = typer.Option(None, help="Folder holding dataset files.")
OVERWRITE = typer.Option(False, help="Replace a different run in --out.")
BACKEND = typer.Option("local", help="Where margins are computed: local (this process) or ray.")
WORKERS = typer.Option(1, help="--backend ray: number of Ray workers (actors).")
GPUS = typer.Option(0.0, "--gpus-per-worker", help="--backend ray: GPUs per worker (fractions share a GPU).")
ADDRESS = typer.Option(None, help="--backend ray: existing cluster (auto, ray://HOST:10001); default: start one.")

def load_inputs(model: str, data: str, weights: Optional[Path], data_root: Optional[Path], limit: Optional[int],
                 domain: Optional[str], device: str, trust_model: bool = False):
    from ..data.loading import DEFAULT_DOMAIN, load_data
    from ..models.loading import load_model

    dom = tuple(parse_floats(domain, "domain")) if domain is not None else DEFAULT_DOMAIN
    if len(dom) != 2:
        from ..errors import InputError
        raise InputError(f"--domain needs two numbers low,high, got {domain!r}", "pass e.g. --domain 0,1")
    dataset = load_data(data, data_root, domain=dom, limit=limit)
    net = load_model(model, weights, device=device, trust=trust_model)
    return net, add_missing_channel(net, dataset)


def add_missing_channel(net: Any, dataset: Any) -> Any:
    """(N, H, W) grayscale images for a model that takes (N, 1, H, W): add the channel, with a note on stderr.
    (The Python API refuses such inputs by name instead of reshaping the user's data.)"""
    import torch

    if dataset.x.ndim != 3:
        return dataset
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    sample = dataset.x[:2].to(dev)
    with torch.no_grad():
        try:
            net(sample)
            return dataset  # the model takes (N, H, W) itself
        except Exception:  # noqa: BLE001 - probing the model's expected shape
            try:
                net(sample.unsqueeze(1))
            except Exception:  # noqa: BLE001 - not a missing channel: the usual check reports it
                return dataset
    from ..data.loading import Data

    fixed = Data(dataset.x.unsqueeze(1).contiguous(), dataset.y, dataset.domain, dataset.num_classes, dataset.name,
                 dataset.class_names)
    err_console.print(f"note: the inputs have shape {tuple(dataset.x.shape)} (grayscale without a channel "
                      f"dimension); added a channel dimension: {tuple(fixed.x.shape)}", highlight=False,
                      soft_wrap=True)
    return fixed


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def command_line() -> str:
    import shlex

    return "brittle " + " ".join(shlex.quote(a) for a in sys.argv[1:])




STRENGTH = typer.Option(None, help="Strength of brittle's attack: fast, default or thorough "
                                   "(docs/input-margins.md); only with --method brittle.")


def attack_options(method: str, strength: str | None, budgets: list[float] | None = None) -> dict[str, Any]:
    """``method_options`` for --strength / --budgets; both belong to brittle's own attack."""
    from ..errors import InputError

    options: dict[str, Any] = {}
    if strength is not None:
        options["strength"] = strength
    if budgets is not None:
        options["budgets"] = budgets
    if options and method != "brittle":
        given = " and ".join(f"--{k}" for k in options)
        verb = "applies" if len(options) == 1 else "apply"
        raise InputError(f"{given} {verb} to brittle's own attack, not to --method {method}",
                         "drop it, or use --method brittle")
    return options
