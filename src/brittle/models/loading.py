"""Model layer: any `torch.nn.Module`, TorchScript files, ``module:factory`` + state-dict checkpoints,
the bundled zoo, and (optional extras) torchvision / timm / RobustBench names.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: a file that needs pickled code
is refused, never executed.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import inspect
import io
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .checkpoint import INPUT_DOMAIN_ATTR, _load_state, load_checkpoint, short_message  # noqa: F401 - re-exported

_LOGIT_KEYS = ("logits", "logit", "output", "out", "scores")


def resolve_device(device: str | torch.device | None = "auto", like: Any = None) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` are taken as given.

    With ``like`` (the data, a tensor), ``"auto"`` picks the device the data already sits on when that is an
    accelerator: a model on the CPU that meets CUDA inputs is then moved to the inputs' GPU.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        held = getattr(like, "device", None)
        if isinstance(held, torch.device) and held.type != "cpu":
            return held
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {device!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was requested but CUDA is not available here", "use device='cpu' or 'auto' (CLI: --device cpu)")
    return dev


class LogitsAdapter(nn.Module):
    """Wrap a model whose forward returns a tuple/list or dict, selecting the logits tensor.

    ``select`` is an index (tuple/list outputs) or a key (dict outputs).
    """

    def __init__(self, model: nn.Module, select: int | str = 0):
        super().__init__()
        self.model = model
        self.select = select
        self.training = model.training  # the wrapper itself adds no mode of its own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, dict):
            return out[self.select]
        if isinstance(out, (tuple, list)):
            return out[int(self.select)]
        return getattr(out, str(self.select)) if isinstance(self.select, str) and hasattr(out, str(self.select)) else out


def _pick_logits(out: Any) -> int | str | None:
    """Which element of a structured output holds the logits, or None when ``out`` is a tensor."""
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, dict):
        for key in _LOGIT_KEYS:
            if key in out and isinstance(out[key], torch.Tensor):
                return key
        raise ModelError(f"the model returns a dict with keys {sorted(out)} and none is 'logits'",
                         "wrap it: brittle.models.loading.LogitsAdapter(model, select='<key of the logits>')")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        matrices = [i for i, o in enumerate(out) if isinstance(o, torch.Tensor) and o.ndim == 2
                    and o.is_floating_point()]
        if len(matrices) == 1:
            return matrices[0]
        shapes = ", ".join(f"{i}: {tuple(o.shape)}" if isinstance(o, torch.Tensor) else f"{i}: {type(o).__name__}"
                           for i, o in enumerate(out))
        raise ModelError(f"the model returns a {type(out).__name__} ({shapes}) and brittle cannot tell which "
                         "element holds the logits",
                         "wrap it: brittle.models.loading.LogitsAdapter(model, select=<index of the logits>)")
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return "logits"
    raise ModelError(f"the model returns {type(out).__name__}, not a tensor of logits",
                     "make forward return logits of shape (N, num_classes) or wrap it in LogitsAdapter")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside brittle (and contextlib): warnings name the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level


def mode_matters(model: nn.Module) -> bool:
    """Whether switching ``model`` to eval mode can change what it computes: it holds dropout, a normalisation
    layer with running statistics, a TorchScript module, or a module of the user's own whose code reads
    ``self.training``. A plain ``nn.Linear`` in train mode computes what it computes in eval mode."""
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd

    for module in model.modules():
        if isinstance(module, (_DropoutNd, nn.AlphaDropout, torch.jit.ScriptModule)):
            return True
        if isinstance(module, _NormBase):
            if module.track_running_stats:
                return True
            continue
        cls = type(module)
        if not cls.__module__.startswith("torch.nn."):
            for attr in vars(cls).values():
                code = getattr(attr, "__code__", None)
                if code is not None and "training" in _code_names(code):
                    return True
    return False


def _code_names(code: Any) -> set[str]:
    """The attribute and global names a function's code reads, its nested functions' included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


@contextmanager
def evaluation_mode(model: Any) -> Iterator[Any]:
    """Run brittle's work on ``model`` in eval mode and give the model back in the mode it was given.

    Every module's ``training`` flag is recorded on entry and restored on exit (also after an error or
    Ctrl-C), so a model in train mode — or one with, say, frozen batch-norm layers inside a training model —
    comes back exactly as it was. A model in train mode gets a warning: brittle's numbers are those of eval
    mode (dropout off, batch-norm running statistics). Anything that is not a module passes through.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    if model.training and mode_matters(model):
        warnings.warn("the model was in train mode; brittle evaluates it in eval mode (dropout/batch-norm frozen) "
                      "and puts it back in train mode afterwards", stacklevel=_user_stacklevel())
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def keeps_model_mode(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator of brittle's API entry points: ``fn``'s ``model`` argument is evaluated in eval mode
    (`evaluation_mode`) and is given back in the mode it came in, whatever ``fn`` does to it."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            model = signature.bind_partial(*args, **kwargs).arguments.get("model")
        except TypeError:  # a wrong call: let fn raise its own error
            model = None
        with evaluation_mode(model):
            return fn(*args, **kwargs)

    return wrapper


def prepare_model(model: Any, *, device: str | torch.device | None = "auto", sample: torch.Tensor | None = None,
                  num_classes: int | None = None) -> nn.Module:
    """Make ``model`` ready for brittle: eval mode (warning if it was training), on ``device``, logits out.

    With ``sample`` (a few inputs), one forward pass checks the output (`checked_forward`): structured outputs
    are adapted (with a warning), and wrong shapes, non-finite logits or a class-count mismatch raise
    `ModelError`.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}",
                         "pass a torch.nn.Module (or a path / zoo name to brittle.load_model)")
    if model.training and mode_matters(model):
        warnings.warn("the model was in train mode; brittle put it in eval mode (dropout/batch-norm frozen)",
                      stacklevel=2)
    model.eval()
    dev = resolve_device(device)
    if model_devices(model) - {_indexed(dev)}:  # `.to` walks every module: skip it when nothing would move
        model.to(dev)
    if sample is None:
        return model
    check_input_scale(model, sample)
    with torch.no_grad():
        model, _ = checked_forward(model, sample[:2].to(dev), num_classes)
    return model


def checked_forward(model: nn.Module, x: torch.Tensor, num_classes: int | None = None, *,
                    check_values: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """``(model, logits)`` of a first forward pass on ``x``, with every check `prepare_model` promises.

    A failing forward is reported in one line (a device mismatch names both devices); a tuple/dict output is
    adapted with `LogitsAdapter` (with a warning, and the adapted model is returned); the logits' shape and
    class count are checked, and with ``check_values`` their values too (finite, not probabilities: a read-back
    from the device). Without it, `logit_value_flags` lets the caller check them later, without stalling.
    """
    try:
        out = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        _refuse_device_mismatch(model, x.device, exc)
        _refuse_missing_channel(model, x)
        _refuse_dtype_mismatch(model, x)
        raise ModelError(f"the model failed on inputs of shape {tuple(x.shape)}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         "check the input shape/channels the model expects against the data") from None
    select = _pick_logits(out)
    if select is not None:
        warnings.warn(f"the model returns {type(out).__name__}; brittle uses element {select!r} as logits",
                      stacklevel=3)
        model = LogitsAdapter(model, select)
        out = model(x)
    if check_values:
        check_logits(out, len(x), num_classes)
    else:
        check_logits_shape(out, len(x), num_classes)
    return model, out


def _indexed(dev: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:N`` that tensors moved there report (so device sets compare equal)."""
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def model_devices(model: nn.Module) -> set[torch.device]:
    """Devices of the model's parameters and buffers (empty for a model without any)."""
    return {t.device for t in [*model.parameters(), *model.buffers()]}


def device_mismatch_error(model: nn.Module, inputs: torch.device) -> ModelError | None:
    """A `ModelError` naming both devices when the model holds tensors off the inputs' device, else None."""
    others = sorted(str(d) for d in model_devices(model) if d != inputs)
    if not others:
        return None
    return ModelError(f"device mismatch: the inputs are on {inputs} but the model holds tensors on "
                      f"{', '.join(others)}",
                      f"move the model to {inputs} (model.to('{inputs}')), or pass device='auto' to let brittle "
                      "move it; register extra tensors with self.register_buffer so that .to() moves them too")


def _refuse_device_mismatch(model: nn.Module, dev: torch.device, exc: Exception) -> None:
    """After a failed forward: name the two devices when that is the cause (not the input shape)."""
    error = device_mismatch_error(model, dev)
    if error is not None:
        raise error from None
    text = str(exc)
    lowered = text.lower()
    if "device" in lowered and ("same device" in lowered or "expected device" in lowered or "cuda" in lowered):
        raise ModelError(f"device mismatch: the inputs are on {dev} but the model uses tensors on another device "
                         f"({text.splitlines()[0][:160]})",
                         "register the model's tensors as parameters or buffers so that model.to(device) moves "
                         "them, or create them on the input's device in forward") from None


def _refuse_dtype_mismatch(model: nn.Module, x: torch.Tensor) -> None:
    """After a failed forward: name the dtypes when the model's floating parameters are not the inputs'."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    dtypes |= {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes and dtypes != {x.dtype}:
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        raise ModelError(f"the model's parameters are {names} but brittle runs it on "
                         f"{str(x.dtype).replace('torch.', '')} inputs",
                         "cast the model with model.float() before passing it")


def _refuse_missing_channel(model: nn.Module, sample: torch.Tensor) -> None:
    """Inputs of shape (N, H, W) into a model that takes (N, 1, H, W): say so by name (after a failure)."""
    if sample.ndim != 3:
        return
    try:
        with torch.no_grad():
            model(sample.unsqueeze(1))
    except Exception:  # noqa: BLE001 - the channel dimension is not the (only) problem
        return
    n, h, w = sample.shape
    raise ModelError(f"the inputs have shape (N, {h}, {w}) without a channel dimension; the model takes "
                     f"(N, 1, {h}, {w}) (grayscale images)",
                     "add the channel dimension: x = x.unsqueeze(1) (numpy: x[:, None]); the command line does "
                     "this by itself")



def check_input_scale(model: nn.Module, sample: torch.Tensor) -> None:
    """Refuse inputs far outside the range the model was trained on, when the model says which range
    (``model.brittle_input_domain``; the zoo models carry their card's ``[0, 1]``): e.g. 0-255 pixels with
    ``--domain 0,255`` into a [0, 1] MNIST model, which would report meaningless margins and accuracies."""
    domain = getattr(model, INPUT_DOMAIN_ATTR, None)
    if domain is None or sample.numel() == 0:
        return
    lo, hi = (float(v) for v in domain)
    xmin, xmax = float(sample.min()), float(sample.max())
    slack = 0.5 * (hi - lo)
    if xmin < lo - slack or xmax > hi + slack:
        fix = ("divide the inputs by 255 and keep the default domain (drop --domain)" if xmax > 2 * hi and xmax <= 255.5
               else f"scale the inputs into [{lo:g}, {hi:g}] and declare that domain")
        raise ModelError(f"the model was trained on inputs in [{lo:g}, {hi:g}] but the data reaches "
                         f"[{xmin:.4g}, {xmax:.4g}]: its margins and accuracies there would mean nothing", fix)


def probabilities_flag(logits: torch.Tensor, atol: float = 1e-4) -> torch.Tensor:
    """On the logits' device, without a read-back: rows all in [0, 1] summing to 1 (the output of a softmax,
    not logits), with at least one value strictly inside (exact one-hot rows are an argmax, not a softmax).
    ``logits`` must be finite and 2-D with >= 2 columns (see `looks_like_probabilities`)."""
    z = logits.detach().double()
    strictly_inside = ((z > 1e-6) & (z < 1 - 1e-6)).any()
    in_range = (z >= -atol).all() & (z <= 1 + atol).all()
    sums_to_one = ((z.sum(1) - 1).abs() <= atol * z.shape[1] + 1e-5).all()  # torch.allclose's test, rtol 1e-5
    return strictly_inside & in_range & sums_to_one


def looks_like_probabilities(logits: torch.Tensor, atol: float = 1e-4) -> bool:
    """Rows all in [0, 1] summing to 1: the output of a softmax, not logits."""
    if logits.ndim != 2 or logits.shape[1] < 2 or not bool(torch.isfinite(logits).all()):
        return False
    return bool(probabilities_flag(logits, atol))


def check_logits_shape(logits: Any, n: int, num_classes: int | None = None) -> None:
    """The shape half of `check_logits`: a tensor of shape (n, C >= 2) with C == num_classes (host metadata
    only, no read-back from the device)."""
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"the model returned {type(logits).__name__}, not a tensor of logits",
                         "make forward return a (batch, num_classes) tensor")
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ModelError(f"the model returned shape {tuple(logits.shape)} for {n} inputs; expected ({n}, num_classes)",
                         "make forward return one row of class logits per input (flatten/squeeze extra dims)")
    if logits.shape[1] < 2:
        raise ModelError(f"the model returned {logits.shape[1]} logit per input; margins need >= 2 classes",
                         "for a binary classifier return two logits, e.g. torch.cat([-z, z], 1)")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ModelError(f"the model returned {logits.shape[1]} logits but the data has {num_classes} classes",
                         "use the model trained for this data (or pass the right num_classes)")


#: the errors behind `logit_value_flags`, in its order
NONFINITE_LOGITS = ("the model returned NaN or infinite logits, or logits beyond ±1e38 (float32's range, in which "
                    "brittle computes margins: their differences would overflow)",
                    "check the model weights and input scaling")
#: the largest logit magnitude brittle accepts: a difference of two stays inside float32's range (3.4e38)
LOGIT_LIMIT = 1e38


def logits_in_range(logits: torch.Tensor) -> torch.Tensor:
    """On the logits' device: every value finite in float32 and at most `LOGIT_LIMIT` in magnitude."""
    z = logits.detach().float()
    return torch.isfinite(z).all() & (z.abs() <= LOGIT_LIMIT).all()
PROBABILITY_OUTPUT = ("the model returns probabilities (every row in [0, 1], summing to 1), not logits: "
                      "margins of probabilities saturate near 1 and rank inputs wrongly",
                      "pass logits: remove the softmax at the end of forward (log-probabilities work too)")


def logit_value_flags(logits: torch.Tensor) -> torch.Tensor:
    """``[all finite, looks like probabilities]`` as a device tensor, to be read once with `raise_logit_values`;
    later batches and their range check into element 0 (``flags[0] &= logits_in_range(logits)``)."""
    finite = logits_in_range(logits)
    return torch.stack([finite, finite & probabilities_flag(logits)])


def raise_logit_values(flags: torch.Tensor) -> None:
    """Raise the `ModelError` that `logit_value_flags` recorded (one read-back from the device)."""
    finite, probabilities = flags.tolist()
    if not finite:
        raise ModelError(*NONFINITE_LOGITS)
    if probabilities:
        raise ModelError(*PROBABILITY_OUTPUT)


def check_logits(logits: torch.Tensor, n: int, num_classes: int | None = None) -> None:
    """Raise `ModelError` unless ``logits`` has shape (n, C >= 2), C == num_classes, finite values, and is not
    a softmax output (rows in [0, 1] summing to 1)."""
    check_logits_shape(logits, n, num_classes)
    if not bool(logits_in_range(logits)):
        raise ModelError(*NONFINITE_LOGITS)
    if looks_like_probabilities(logits):
        raise ModelError(*PROBABILITY_OUTPUT)


_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def _plain_setting(value: Any) -> str | None:
    """A module attribute as text when it can change what forward computes (numbers, strings, tuples of them,
    functions by name), else None."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value):
        return repr(tuple(value))
    if callable(value) and not isinstance(value, (nn.Module, torch.Tensor)) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return None


@functools.lru_cache(maxsize=512)
def _class_code(cls: type) -> str:
    """The code of a module class (its forward and helpers): its source's syntax tree, so that comments,
    docstrings and layout do not count (editing a comment in the model's class keeps a run resumable), or its
    bytecode where no source is at hand."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        code = getattr(getattr(cls, "forward", None), "__code__", None)
        return "" if code is None else _code_text(code)
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:  # source Python cannot parse on its own (an odd indentation): hashed as written
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # the docstring
    return ast.dump(tree)


def _code_text(code: Any) -> str:
    """A code object's bytecode, names and constants as text, nested code objects (comprehensions, lambdas)
    by their contents: never their repr, which holds a memory address that differs from run to run."""
    consts = ", ".join(_code_text(c) if inspect.iscode(c) else repr(c) for c in code.co_consts)
    return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|({consts})"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of what the model computes: every module's class and code (TorchScript: its compiled code),
    its plain settings (numbers, strings, functions it stores: an activation, a temperature) and the state
    dict (parameters and buffers). A run resumes only on a model with the same fingerprint, so a changed
    ``forward`` with the same weights is a different model."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for path, module in model.named_modules():
        cls = type(module)
        h.update(f"\0{path}\0{cls.__module__}.{cls.__qualname__}\0".encode())
        code = getattr(module, "code", None) if isinstance(module, torch.jit.ScriptModule) else None
        h.update((code if isinstance(code, str) else _class_code(cls)).encode())
        for key, value in sorted(vars(module).items()):
            setting = None if key.startswith("_") or key == "training" else _plain_setting(value)
            if setting is not None:
                h.update(f"\0{key}={setting}".encode())
    h.update(b"\0state")
    return weights_fingerprint(model, h)


def weights_fingerprint(model: nn.Module, h: Any = None) -> str:
    """SHA-256 of the model's class name and state dict only (parameters and buffers): the fingerprint of
    brittle 0.3.0 and earlier, which monitors saved then carry. With ``h``, the state dict is added to that
    hash instead."""
    if h is None:
        h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def import_factory(target: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:callable"``."""
    module_name, _, attr = target.partition(":")
    if module_name == "brittle.zoo" or module_name.startswith("brittle.zoo."):  # the zoo's path before 0.3
        module_name = "brittle.models.zoo" + module_name[len("brittle.zoo"):]
    if not module_name or not attr:
        raise ModelError(f"{target!r} is not of the form 'module:factory'", "pass e.g. mypkg.models:make_net")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} ({exc})", "install the package or add it to PYTHONPATH") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr!r}", "check the factory name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"{target!r} is not callable", "point at a class or function that builds the model")
    return obj


class _Exported(nn.Module):
    """Holds a module from a ``torch.export`` archive, whose graph is fixed (train/eval does not apply)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> "_Exported":
        self.training = mode  # the exported graph was captured in one mode; nothing to switch
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.module(x)
        except (AssertionError, RuntimeError) as exc:
            if "Guard failed" not in str(exc) and "Expected input" not in str(exc):
                raise
            raise ModelError(f"the torch.export archive's graph takes other input shapes than {tuple(x.shape)} "
                             f"({short_message(exc)})",
                             "export it with a dynamic batch size: torch.export.export(model, (x,), "
                             "dynamic_shapes=({0: torch.export.Dim('batch')},))") from None


PT2_UNTRUSTED = ("{path} is a torch.export archive, and torch.export.load unpickles parts of it: a crafted "
                 "archive runs code as it loads, so brittle loads one only when told the file is trusted",
                 "if you made the file or trust its source, pass trust=True (CLI: --trust-model); otherwise ask "
                 "for a state dict (--model module:factory --weights PATH) or a TorchScript file")


def _load_torchscript(path: Path, trust: bool = False) -> nn.Module:
    if path.suffix == ".pt2":  # torch.export archive (the successor of TorchScript)
        if not trust:
            raise ModelError(PT2_UNTRUSTED[0].format(path=path), PT2_UNTRUSTED[1])
        try:
            return _Exported(torch.export.load(str(path)).module())
        except Exception as exc:  # noqa: BLE001 - torch.export raises many types on bad archives
            raise ModelError(f"{path} is not a loadable torch.export archive ({short_message(exc)})",
                             "re-export it with torch.export.save(torch.export.export(model, (x,)), path)") from None
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"{path} is not a TorchScript file ({short_message(exc)})",
                         "for a state dict pass the architecture too: --model module:factory --weights PATH") from None


def load_model(spec: str | nn.Module, weights: str | os.PathLike | None = None, *,
               device: str | torch.device | None = "auto", trust: bool = False, **factory_kwargs: Any) -> nn.Module:
    """Load a model named by a string, as the CLI does, in eval mode on ``device``.

    ``spec`` is one of: a zoo name (``brittle zoo list``; also ``zoo:NAME``); a TorchScript file or a
    ``torch.export`` archive (``.pt2``);
    ``module:factory`` with ``weights`` a state-dict checkpoint; ``torchvision:NAME``, ``timm:NAME``
    or ``robustbench:MODEL_ID[:dataset[:threat]]`` (optional extras, download where network is allowed).
    ``weights`` (a state-dict checkpoint) replaces the weights of every kind but a model file: a zoo model
    fine-tuned by ``brittle finetune`` is ``load_model("standard", "runs/ft/model.pt")``. Its keys and shapes
    must fit the architecture exactly (`ModelError` otherwise), and a missing file is refused before
    anything is built. Checkpoints load with ``weights_only=True`` (pickled code is refused, never run); a
    ``.pt2`` archive, which ``torch.export.load`` partly unpickles, loads only with ``trust=True``.
    """
    if isinstance(spec, nn.Module):
        return prepare_model(spec, device=device)
    from . import zoo

    kind, _, rest = spec.partition(":")
    if kind == "zoo" or (not rest and spec in zoo.names()):
        state = load_checkpoint(weights) if weights is not None else None  # a missing file: refused first
        model = zoo.load(rest or spec)
        if state is not None:  # the zoo architecture with these weights (fine-tuned, say), strictly
            model = _load_state(model, state, str(weights))
    elif kind == "torchvision":
        model = _hub_torchvision(rest, weights)
    elif kind == "timm":
        model = _hub_timm(rest, weights)
    elif kind == "robustbench":
        state = load_checkpoint(weights) if weights is not None else None
        model = _hub_robustbench(rest)
        if state is not None:
            model = _load_state(model, state, str(weights))
    elif rest and not Path(spec).exists() and "/" not in kind and "\\" not in kind:
        model = import_factory(spec)(**factory_kwargs)
        if not isinstance(model, nn.Module):
            raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module", "return an nn.Module")
        if weights is not None:
            model = _load_state(model, load_checkpoint(weights), str(weights))
    else:
        path = Path(spec)
        if not path.exists():
            known = ", ".join(zoo.names())
            raise ModelError(f"model {spec!r} is neither a file, a zoo name ({known}) nor module:factory",
                             "check the path or name")
        if weights is not None:
            raise ModelError(f"a model file ({path}) and --weights were both given",
                             "for a state dict pass the architecture as --model module:factory --weights PATH")
        model = _load_torchscript(path, trust=trust)
    return prepare_model(model.eval(), device=device)  # freshly built: eval mode is expected, no warning


def _hub_torchvision(name: str, weights: str | os.PathLike | None) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise ModelError("torchvision is not installed", "pip install 'brittle[vision]'") from None
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ModelError(f"torchvision has no model {name!r}", "see torchvision.models.list_models()") from None
    if weights is not None:
        return _load_state(builder(weights=None), load_checkpoint(weights), str(weights))
    return builder(weights="DEFAULT")


def _hub_timm(name: str, weights: str | os.PathLike | None) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelError("timm is not installed", "pip install 'brittle[timm]'") from None
    if weights is not None:
        return _load_state(timm.create_model(name, pretrained=False), load_checkpoint(weights), str(weights))
    return timm.create_model(name, pretrained=True)


def _hub_robustbench(spec: str) -> nn.Module:
    model_id, _, rest = spec.partition(":")
    dataset, _, threat = rest.partition(":")
    try:
        from robustbench.utils import load_model as rb_load
    except ImportError:
        raise ModelError("robustbench is not installed", "pip install 'brittle[robustbench]'") from None
    model_dir = os.environ.get("BRITTLE_ROBUSTBENCH_DIR", "./models")
    try:
        return rb_load(model_name=model_id, model_dir=model_dir, dataset=dataset or "cifar10",
                       threat_model=threat or "Linf")
    except Exception as exc:  # noqa: BLE001 - robustbench raises many types (network, key, file)
        raise ModelError(f"RobustBench could not load {model_id!r}: {type(exc).__name__}: {str(exc)[:160]}",
                         f"check the model ID, or put its checkpoint under {model_dir} "
                         "(BRITTLE_ROBUSTBENCH_DIR) on a machine without network") from None


def save_torchscript(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> None:
    """Trace ``model`` on ``example`` and save it as TorchScript (loads anywhere without the code)."""
    traced = torch.jit.trace(model.eval(), example)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    Path(path).write_bytes(buf.getvalue())
