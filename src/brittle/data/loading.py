"""Data layer: turn what a user has into one validated, in-memory `Data` object.

Accepted: `Data`, torch tensors / numpy arrays (with labels), `(x, y)` tuples, torch `Dataset` /
`DataLoader`, `.npz` files with ``x``/``y``, MNIST / Fashion-MNIST idx files from a folder (the MNIST
test split ships inside the package), scikit-learn's 8x8 digits and torchvision datasets (optional).
Every check happens here, at the boundary, and fails with a one-line `InputError`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

Domain = tuple[float, float]
DEFAULT_DOMAIN: Domain = (0.0, 1.0)

#: Folders with MNIST-style idx files, by dataset name, relative to a data root.
_IDX_FOLDERS = {
    "mnist": ["MNIST/raw", "mnist", "MNIST", "."],
    "fashion-mnist": ["FashionMNIST/raw", "fashion-mnist", "FashionMNIST", "."],
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass(frozen=True)
class Data:
    """A validated, in-memory classification dataset.

    Attributes:
        x: float32 inputs, shape ``(N, *input_shape)``, values inside ``domain``.
        y: int64 labels, shape ``(N,)``, or ``None`` when unlabelled (margins need no labels).
        domain: the box ``(low, high)`` every input (and every perturbed input) lives in.
        num_classes: number of classes when known.
        name: a short human-readable name (used in reports).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    domain: Domain = DEFAULT_DOMAIN
    num_classes: int | None = None
    name: str = "data"
    class_names: list[str] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """Yield ``(offset, x_batch, y_batch)`` in order, from sample ``start`` on."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}", "pass a positive batch size")
        for lo in range(start, len(self), batch_size):
            hi = min(lo + batch_size, len(self))
            yield lo, self.x[lo:hi], None if self.y is None else self.y[lo:hi]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor | slice) -> "Data":
        """The samples at ``indices`` (a slice, or integer positions)."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return Data(self.x[indices], None if self.y is None else self.y[indices], self.domain,
                    self.num_classes, self.name, self.class_names)

    def head(self, n: int | None) -> "Data":
        """The first ``n`` samples (all of them when ``n`` is None)."""
        if n is None:
            return self
        _check_limit(n)
        return self.subset(slice(0, n))

    def fingerprint(self) -> str:
        """SHA-256 of inputs, labels and domain: identifies the data of a run."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.x.numpy()).tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y.numpy()).tobytes())
        h.update(repr((self.domain, tuple(self.x.shape))).encode())
        return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _check_limit(limit: Any) -> None:
    """``limit`` (a number of samples) is None or an integer >= 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise InputError(f"limit must be >= 1, got {limit}", "pass a positive number of samples or no limit")


#: numpy dtype kinds that are not numbers, by what they hold (``np.dtype.kind``)
_NON_NUMERIC = {"U": "text", "S": "bytes", "M": "dates and times", "m": "time spans", "V": "raw or structured records"}


def _numeric_dtype(a: np.ndarray, what: str) -> None:
    """Refuse, naming the dtype, an array torch cannot take as numbers: text (e.g. labels saved as strings),
    dates, raw records, long double."""
    held = _NON_NUMERIC.get(a.dtype.kind)
    if held is None and a.dtype.kind in "fc" and a.dtype.itemsize > (8 if a.dtype.kind == "f" else 16):
        held = "long double, which torch cannot hold"
    if held is None:
        return
    if what == "y":
        fix = ("pass integer class indices 0..K-1 (for class names: "
               "names, y = np.unique(y, return_inverse=True))")
    elif held.startswith("long double"):
        fix = f"convert with {what}.astype(np.float64) (or np.float32)"
    else:
        fix = f"pass {what} as floating-point numbers, e.g. {what}.astype(np.float32)"
    raise InputError(f"{what} has dtype {a.dtype} ({held})", fix)


def _to_tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise InputError(f"{what} is a numpy array of Python objects",
                             f"convert {what} to a numeric array (e.g. np.stack of the items)")
        _numeric_dtype(a, what)
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, (list, tuple)):
        try:
            arr = np.asarray(a)
        except ValueError as exc:
            raise InputError(f"{what} is a ragged or non-numeric sequence ({exc})",
                             f"pass {what} as an array of one shape") from None
        if arr.dtype != object:
            return _to_tensor(arr, what)
        try:
            return torch.as_tensor(arr)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{what} is a ragged or non-numeric sequence ({exc})",
                             f"pass {what} as an array of one shape") from None
    raise InputError(f"{what} has unsupported type {type(a).__name__}",
                     f"pass {what} as a torch tensor or numpy array")


def validate(x: Any, y: Any = None, *, domain: Domain = DEFAULT_DOMAIN, num_classes: int | None = None,
             name: str = "data", class_names: list[str] | None = None) -> Data:
    """Check inputs and labels and return them as a `Data` (float32 / int64 tensors on the CPU)."""
    x = _to_tensor(x, "x")
    lo, hi = _check_domain(domain)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError("the data is empty (0 samples)", "pass at least one input")
    if x.ndim < 2:
        raise InputError(f"x has shape {tuple(x.shape)}: expected (N, ...) with one row per sample",
                         "add a batch dimension, e.g. x.reshape(len(x), -1) or x[None]")
    if not torch.is_floating_point(x):
        fix = "convert with x.float() / 255" if x.dtype == torch.uint8 else "convert with x.float()"
        raise InputError(f"x has dtype {x.dtype}: expected floating-point inputs in the domain [{lo}, {hi}]", fix)
    finite = torch.isfinite(x)  # in the given precision: a finite float64 beyond float32's range is not inf
    if not bool(finite.all()):
        bad = (~finite).reshape(len(x), -1).any(1).nonzero().flatten()
        raise InputError(f"x has non-finite values (NaN or inf) in {len(bad)} sample(s), first at index {int(bad[0])}",
                         "remove or repair those samples before the audit")
    f32_max = torch.finfo(torch.float32).max
    if x.dtype == torch.float64 and bool((x.abs() > f32_max).any()):
        bad = (x.abs() > f32_max).reshape(len(x), -1).any(1).nonzero().flatten()
        peak = float(x.abs().max())
        raise InputError(f"x has values too large for float32 (|x| up to {peak:.4g}, float32 holds up to "
                         f"{f32_max:.4g}) in {len(bad)} sample(s), first at index {int(bad[0])}",
                         "scale the inputs into the input domain (e.g. [0, 1]) before the audit")
    x = x.to(torch.float32)
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        if xmin >= 0 and 1 < xmax <= 255 and (lo, hi) == DEFAULT_DOMAIN:
            fix = ("these look like 0-255 pixel values: divide by 255 (x / 255), since models are usually trained "
                   "on [0, 1]; declare domain=(0, 255) / --domain 0,255 only for a model that itself takes 0-255 inputs")
        else:
            fix = ("scale the inputs into the domain (normalisation belongs inside the model) "
                   "or declare the right domain, e.g. domain=(lo, hi) / --domain lo,hi")
        raise InputError(f"x has values in [{xmin:.4g}, {xmax:.4g}], outside the declared input domain [{lo}, {hi}]",
                         fix)
    x = x.clamp(lo, hi)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}", "pass the model's number of classes")
    labels = None if y is None else _validate_labels(_to_tensor(y, "y"), len(x), num_classes)
    if num_classes is None and labels is not None and class_names is not None:
        num_classes = len(class_names)
    return Data(x.contiguous(), labels, (lo, hi), num_classes, name, class_names)


def _check_domain(domain: Any) -> Domain:
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise InputError(f"domain must be a pair (low, high), got {domain!r}", "pass e.g. domain=(0.0, 1.0)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"domain must be finite with low < high, got ({lo}, {hi})", "pass e.g. domain=(0.0, 1.0)")
    return lo, hi


def _validate_labels(y: torch.Tensor, n: int, num_classes: int | None) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] > 1:
        raise InputError(f"labels have shape {tuple(y.shape)} (one-hot?): expected one class index per sample",
                         "pass y.argmax(1)")
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"labels have shape {tuple(y.shape)} but there are {n} inputs",
                         "pass one integer label per input, shape (N,)")
    if torch.is_floating_point(y):
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise InputError("labels are floats that are not whole numbers", "pass integer class indices")
    elif y.dtype == torch.bool or torch.is_complex(y):
        raise InputError(f"labels have dtype {y.dtype}", "pass integer class indices")
    top = "num_classes-1" if num_classes is None else str(num_classes - 1)
    out_of_range = "map labels to 0..num_classes-1 (or pass the right num_classes)"
    if torch.is_floating_point(y) or y.dtype == torch.uint64:  # values int64 cannot hold: reported as they are
        real = y.double()
        rmin, rmax = float(real.min()), float(real.max())
        if rmin < -(2.0 ** 63) or rmax >= 2.0 ** 63:
            raise InputError(f"labels range over [{rmin:.6g}, {rmax:.6g}], outside the class indices 0..{top}",
                             out_of_range)
    y = y.to(torch.int64)
    ymin, ymax = int(y.min()), int(y.max())
    if ymin < 0 or (num_classes is not None and ymax >= num_classes):
        raise InputError(f"labels range over [{ymin}, {ymax}], outside the class indices 0..{top}", out_of_range)
    return y.contiguous()


# --------------------------------------------------------------------------------------------
# Conversions from what users have
# --------------------------------------------------------------------------------------------

def as_data(data: Any, labels: Any = None, *, domain: Domain | None = None, num_classes: int | None = None,
            name: str | None = None) -> Data:
    """Convert ``data`` (see module docstring for the accepted forms) to a validated `Data`.

    ``domain`` defaults to the domain of ``data`` when it is a `Data`, else to [0, 1].
    """
    if isinstance(data, Data):
        if labels is None and num_classes is None and (domain is None or tuple(domain) == data.domain):
            return data
        return validate(data.x, data.y if labels is None else labels, domain=domain or data.domain,
                        num_classes=num_classes or data.num_classes, name=name or data.name,
                        class_names=data.class_names)
    if isinstance(data, (str, os.PathLike)):
        return as_data(load_data(str(data)), labels, domain=domain, num_classes=num_classes, name=name)
    domain = DEFAULT_DOMAIN if domain is None else domain
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    if isinstance(data, torch.utils.data.DataLoader):
        x, y = _from_batches(iter(_in_data_order(data)))
        return validate(x, y if labels is None else labels, domain=domain, num_classes=num_classes,
                        name=name or "dataloader")
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        x, y = _from_items(data)
        classes = getattr(data, "classes", None)
        return validate(x, y if labels is None else labels, domain=domain, num_classes=num_classes,
                        name=name or type(data).__name__, class_names=list(classes) if classes else None)
    if isinstance(data, torch.utils.data.IterableDataset):
        x, y = _from_items(list(data))
        return validate(x, y if labels is None else labels, domain=domain, num_classes=num_classes,
                        name=name or type(data).__name__)
    return validate(data, labels, domain=domain, num_classes=num_classes, name=name or "arrays")


def _in_data_order(loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """``loader`` reading every sample of its dataset once, in the dataset's order.

    brittle's results are per sample, in the data's order (the ``index`` column, a run's data fingerprint): a
    shuffled pass could not be matched back to the data, an identical re-run would read as another run, and a
    dropped last batch would go unaudited. So a loader that shuffles (``shuffle=True``; a `SubsetRandomSampler`:
    its indices, sorted) or drops its last batch is read again in order, with its own ``collate_fn`` and
    workers. Samplers that draw with replacement or by weight define no data to read in order and are refused.
    """
    from torch.utils.data import DataLoader, RandomSampler, Subset, SubsetRandomSampler, WeightedRandomSampler
    from torch.utils.data.distributed import DistributedSampler

    dataset = loader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return loader
    sampler = loader.sampler if loader.batch_size is not None else getattr(loader.batch_sampler, "sampler", None)
    size = len(dataset)
    if isinstance(sampler, RandomSampler) and not sampler.replacement and sampler.num_samples == size:
        pass  # shuffle=True: the whole dataset
    elif isinstance(sampler, SubsetRandomSampler):
        dataset = Subset(dataset, sorted(int(i) for i in sampler.indices))
    elif isinstance(sampler, (RandomSampler, WeightedRandomSampler)) or (
            isinstance(sampler, DistributedSampler) and sampler.shuffle):
        raise InputError(f"the DataLoader draws its samples at random ({type(sampler).__name__}, with replacement, "
                         "by weight or per process): brittle's per-sample results need each sample once, in order",
                         "pass the dataset itself, or a DataLoader with shuffle=False")
    elif loader.batch_size is None or not (loader.drop_last and size % loader.batch_size):
        return loader  # in order, nothing dropped (or a batch sampler of the user's own)
    return DataLoader(dataset, batch_size=loader.batch_size or 1, shuffle=False, drop_last=False,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator)


def _item_to_tensor(item: Any) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item)
    if type(item).__module__.startswith("PIL"):  # a PIL image from a torchvision dataset without transform
        arr = np.asarray(item, dtype=np.float32) / 255.0
        return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    return torch.as_tensor(item)


def _split_item(item: Any) -> tuple[Any, Any]:
    if isinstance(item, dict):
        keys = [k for k in ("x", "image", "input", "inputs", "pixel_values") if k in item]
        lkeys = [k for k in ("y", "label", "labels", "target") if k in item]
        if not keys:
            raise InputError(f"dataset items are dicts with keys {sorted(item)} and no input key",
                             "return (x, y) tuples or dicts with keys 'x' and 'y'")
        return item[keys[0]], item[lkeys[0]] if lkeys else None
    if isinstance(item, (tuple, list)):
        if len(item) == 0:
            raise InputError("dataset items are empty tuples", "return (x, y) tuples")
        return item[0], item[1] if len(item) > 1 else None
    return item, None


def _label_tensor(y: Any, where: str) -> torch.Tensor:
    """One item's or batch's labels as a tensor, as they are (the dtype and shape checks are `_validate_labels`')."""
    if isinstance(y, torch.Tensor):
        return y
    try:
        return torch.as_tensor(np.asarray(y) if isinstance(y, (list, tuple)) else y)
    except (TypeError, ValueError, RuntimeError):
        example = y[0] if isinstance(y, (list, tuple)) and len(y) else y
        raise InputError(f"{where} labels are not numbers (e.g. {str(example)[:40]!r})",
                         "return integer class indices, e.g. map class names to 0..C-1 in the dataset") from None


def _joined_labels(ys: list[torch.Tensor], with_labels: int, total: int, what: str) -> torch.Tensor | None:
    """The labels of all ``total`` items or batches, or None when none has any; some without labels is refused
    (silently dropping every label would audit the data unlabelled)."""
    if with_labels == 0:
        return None
    if with_labels < total:
        raise InputError(f"{total - with_labels} of {total} {what} have no label",
                         f"give every one of the {what} a label, or none (unlabelled data)")
    try:
        return torch.stack(ys) if what == "items" else torch.cat(ys)
    except RuntimeError:
        shapes = sorted({tuple(t.shape) for t in ys})[:3]
        raise InputError(f"the {what}' labels have different shapes {shapes}",
                         "give one integer class index per input") from None


def _from_items(items: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    xs, ys = [], []
    for item in items:
        xi, yi = _split_item(item)
        xs.append(_item_to_tensor(xi))
        if yi is not None:
            ys.append(_label_tensor(yi, "dataset item"))
    if not xs:
        raise InputError("the dataset is empty (0 samples)", "pass at least one input")
    shapes = {tuple(t.shape) for t in xs}
    if len(shapes) > 1:
        raise InputError(f"dataset items have different shapes {sorted(shapes)[:3]}",
                         "resize/crop inputs to one shape (e.g. a transform) before the audit")
    return torch.stack(xs), _joined_labels(ys, len(ys), len(xs), "items")


def _from_batches(batches: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    xs, ys = [], []
    for batch in batches:
        xb, yb = _split_item(batch)
        xs.append(_item_to_tensor(xb))
        if yb is not None:
            yb = _label_tensor(yb, "DataLoader batch")
            ys.append(yb.reshape(1) if yb.ndim == 0 else yb)  # a batch's (B,) labels, or (B, C) one-hot ones
    if not xs:
        raise InputError("the DataLoader yielded no batches", "pass a non-empty DataLoader")
    try:
        x = torch.cat(xs)
    except RuntimeError as exc:
        raise InputError(f"DataLoader batches have incompatible shapes ({exc})", "yield batches of one input shape") from None
    return x, _joined_labels(ys, len(ys), len(xs), "batches")


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (MNIST format, gzip or plain) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError(f"idx file {path} does not exist", "check the path or the data root") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"idx file {path} cannot be read ({exc})", "re-download or re-copy the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path} is not an unsigned-byte idx file (bad magic number)",
                         "point at the MNIST-format files (e.g. t10k-images-idx3-ubyte.gz)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise InputError(f"{path} is truncated or corrupt: header says {expected} bytes, found {len(raw) - offset}",
                         "re-copy the file")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _bundled_mnist_dir() -> Path:
    return Path(str(resources.files("brittle") / "_data" / "mnist"))


def _find_idx(root: Path, variant: str, stem: str) -> Path:
    for sub in _IDX_FOLDERS[variant]:
        for suffix in ("", ".gz"):
            candidate = root / sub / (stem + suffix)
            if candidate.exists():
                return candidate
    raise InputError(f"no {variant} file {stem}[.gz] under {root} (looked in {', '.join(_IDX_FOLDERS[variant])})",
                     f"pass the folder that holds the {variant} idx files")


def load_mnist(split: str = "test", root: str | os.PathLike | None = None, variant: str = "mnist") -> Data:
    """MNIST or Fashion-MNIST as `Data` with inputs in [0, 1], shape (N, 1, 28, 28).

    With ``root=None`` the MNIST test split bundled in the package is used (the train split and
    Fashion-MNIST need a folder of idx files: ``root`` or the ``BRITTLE_DATA_ROOT`` environment variable).
    """
    if variant not in _IDX_FOLDERS:
        raise InputError(f"unknown idx dataset {variant!r}", f"use one of {sorted(_IDX_FOLDERS)}")
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}", "use 'train' or 'test'")
    prefix = "t10k" if split == "test" else "train"
    root = root or os.environ.get("BRITTLE_DATA_ROOT")
    if root is None:
        if variant != "mnist" or split != "test":
            bundled = (" (the first 5,000 Fashion-MNIST test images ship as the OOD set: "
                       "brittle.data.ood_sets.load_fashion_mnist_test())" if variant == "fashion-mnist" else "")
            raise InputError(f"{variant}:{split} needs a data folder: of its splits only the MNIST test split ships "
                             f"with brittle whole{bundled}",
                             "pass root=DIR (CLI: --data-root DIR) with the idx files, or set BRITTLE_DATA_ROOT")
        folder = _bundled_mnist_dir()
        images, labels = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    else:
        images = _find_idx(Path(root), variant, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(Path(root), variant, f"{prefix}-labels-idx1-ubyte")
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise InputError(f"idx files disagree: images {x.shape}, labels {y.shape}", "use matching images/labels files")
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    names = FASHION_MNIST_CLASSES if variant == "fashion-mnist" else [str(i) for i in range(10)]
    return validate(x, torch.from_numpy(y.astype(np.int64)), num_classes=10, name=f"{variant}:{split}",
                    class_names=names)


def load_digits() -> Data:
    """scikit-learn's 8x8 digits (1,797 images) as `Data` in [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    return validate(x, torch.from_numpy(d.target.astype(np.int64)), num_classes=10, name="digits",
                    class_names=[str(i) for i in range(10)])


def load_npz(path: str | os.PathLike, *, domain: Domain = DEFAULT_DOMAIN, num_classes: int | None = None) -> Data:
    """An ``.npz`` file with array ``x`` (inputs) and optionally ``y`` (labels). Pickled objects are refused."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data file {path} does not exist", "check the path")
    with open(path, "rb") as fh:
        if fh.read(2) != b"PK":
            raise InputError(f"{path} is not a readable .npz file (not a zip archive)",
                             "re-create it with np.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if "x" not in keys:
                raise InputError(f"{path} has arrays {keys} but no 'x'", "save inputs as np.savez(path, x=..., y=...)")
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path} holds pickled objects or is not a valid .npz ({exc})",
                         "save plain numeric arrays with np.savez") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npz file ({exc})", "re-create it with np.savez(path, x=..., y=...)") from None
    # named by the path as given: two files with the same stem in different folders are different data
    return validate(x, y, domain=domain, num_classes=num_classes, name=str(path))


def load_torchvision(name: str, split: str = "test", root: str | os.PathLike | None = None,
                     download: bool = False, *, limit: int | None = None) -> Data:
    """A torchvision dataset (optional dependency) by class name, e.g. ``CIFAR10``, as `Data` in [0, 1].

    Datasets that take ``train=`` get ``train=(split == "train")``, those that take ``split=`` (SVHN, STL10, …)
    get ``split``. With ``limit`` only the first ``limit`` images are converted to tensors (the dataset object
    itself reads its files as torchvision does, often all of them at once).
    """
    _check_limit(limit)
    try:
        import torchvision
        from torchvision.transforms import ToTensor
    except ImportError:
        raise InputError("torchvision is not installed", "pip install 'brittle[vision]'") from None
    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise InputError(f"torchvision has no dataset {name!r}", "use a class name from torchvision.datasets, e.g. CIFAR10")
    from ..models.checkpoint import short_message

    root = root or os.environ.get("BRITTLE_DATA_ROOT") or "."

    def build() -> Any:
        try:
            return cls(str(root), train=(split == "train"), download=download, transform=ToTensor())
        except TypeError:  # no train=: the datasets named by split= (SVHN, STL10, ...)
            pass
        try:
            return cls(str(root), split=split, download=download, transform=ToTensor())
        except TypeError as exc:
            raise InputError(f"torchvision {name} takes neither train= nor split= ({short_message(exc)})",
                             "build the dataset in Python and pass it to brittle (e.g. brittle.audit(model, "
                             "dataset))") from None

    try:
        ds = build()
    except ValueError as exc:  # e.g. torchvision's "Unknown value 'val' for argument split"
        raise InputError(f"torchvision {name} has no split {split!r} ({short_message(exc)})",
                         f"pass a split it has, e.g. torchvision:{name}:test") from None
    except (RuntimeError, OSError) as exc:  # torchvision's "Dataset not found or corrupted"
        # its advice to use download=True is left out: the command line never downloads
        sentences = re.split(r"(?<=\.)\s+", short_message(exc))
        reason = " ".join(p for p in sentences if "download" not in p.lower()).rstrip(".")
        raise InputError(f"torchvision {name} ({split}) not found under {root}" + (f" ({reason})" if reason else ""),
                         f"check the network and the folder {root}" if download else
                         f"put the files of torchvision's {name} in the folder layout torchvision expects and pass "
                         "that folder with --data-root DIR (or set BRITTLE_DATA_ROOT); brittle does not download "
                         "data sets") from None
    classes = getattr(ds, "classes", None)
    if limit is not None and hasattr(ds, "__len__") and len(ds) > limit:
        ds = torch.utils.data.Subset(ds, range(limit))  # convert only the images that will be used
    x, y = _from_items(ds)
    return validate(x, y, name=f"{name}:{split}", class_names=list(classes) if classes else None)


def load_data(spec: str, root: str | os.PathLike | None = None, *, domain: Domain = DEFAULT_DOMAIN,
              num_classes: int | None = None, limit: int | None = None) -> Data:
    """Load data named by a string, as the CLI does.

    ``spec`` is one of: ``mnist[:test|train]`` (test split bundled), ``fashion-mnist[:split]``, ``digits``,
    ``torchvision:NAME[:split]``, a path to an ``.npz`` file, or a folder of MNIST-format idx files (its
    ``t10k-*`` test files). The data's name (the ``data`` of a summary; `brittle compare` treats runs of one
    name as runs on the same data) is ``mnist:test`` and the like for the named data sets, the path as given
    for an ``.npz`` file, and ``"<folder> (idx t10k)"`` for a folder. ``limit`` keeps the first ``limit``
    samples (a torchvision data set converts only those).
    """
    _check_limit(limit)  # before anything is read
    kind, _, split = spec.partition(":")
    key = kind.lower()
    if key in ("mnist", "fashion-mnist", "fashion_mnist", "fashionmnist"):
        variant = "mnist" if key == "mnist" else "fashion-mnist"
        data = load_mnist(split or "test", root, variant)
    elif key == "digits":
        data = load_digits()
    elif key == "torchvision":
        name, _, tv_split = split.partition(":")
        data = load_torchvision(name, tv_split or "test", root, limit=limit)
    else:
        path = Path(spec)
        if path.suffix == ".npz" or path.is_file():
            data = load_npz(path, domain=domain, num_classes=num_classes)
        elif path.is_dir():  # MNIST-format idx files of some data set: named by the folder, not as MNIST
            data = replace(load_mnist("test", path, "mnist"), name=f"{path} (idx t10k)", class_names=None)
        else:
            raise InputError(f"unknown data {spec!r}: not a dataset name, .npz file or folder",
                             "use mnist, fashion-mnist, digits, torchvision:NAME, a .npz path or a folder of idx files")
    if tuple(domain) != DEFAULT_DOMAIN and data.domain != tuple(domain):
        data = validate(data.x, data.y, domain=domain, num_classes=num_classes or data.num_classes, name=data.name,
                        class_names=data.class_names)
    return data.head(limit)
