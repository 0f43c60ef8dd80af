"""Out-of-distribution sets for MNIST-like classifiers: Fashion-MNIST and sets generated from a seed.

Every set is a `Data` of float32 images in [0, 1] of shape (N, 1, 28, 28), without labels (OOD inputs have
no class of the ID task). Generated sets are deterministic: the same ``seed`` (and the same source images)
gives the same bytes. Each set draws from its own stream ``SeedSequence([seed, crc32(name)])``.

=================  ==================================================================================
name               what
=================  ==================================================================================
``fashion-mnist``  Fashion-MNIST test split: all 10,000 from ``root`` / ``BRITTLE_DATA_ROOT`` (idx files),
                   else the first 5,000 bundled with brittle (MIT licence, ``_data/fashion-mnist/NOTICE.md``)
``uniform``        i.i.d. uniform noise U[0, 1] per pixel
``gaussian``       i.i.d. N(0.5, 0.25²) per pixel, clipped to [0, 1]
``rotated``        the source (ID test) images rotated by 90° counter-clockwise
``inverted``       the source images inverted, ``1 − x``
``permuted``       the source images with one fixed random pixel permutation (from the seed)
``digits``         scikit-learn's 8×8 digits (1,797), resized to 20×20 (bilinear, antialiased) and padded by
                   4 pixels to 28×28 — MNIST's framing (digits in a 20×20 box, centred)
=================  ==================================================================================

``n`` caps a set's size (generated noise sets have ``n`` images, default: as many as the source images).
"""

from __future__ import annotations

import lzma
import os
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .loading import Data, as_data, load_mnist, validate

OOD_SETS = ("fashion-mnist", "uniform", "gaussian", "rotated", "inverted", "permuted", "digits")
BUNDLED_FASHION = 5000


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def _images(x: np.ndarray | torch.Tensor, name: str) -> Data:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    return validate(t.contiguous(), None, name=name)


def _read_xz_idx(path: Path) -> np.ndarray:
    raw = lzma.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist_test(root: str | os.PathLike | None = None) -> Data:
    """Fashion-MNIST test images: the full split from ``root`` / ``BRITTLE_DATA_ROOT``, else the bundled
    first 5,000 (labels kept, class names set)."""
    root = root or os.environ.get("BRITTLE_DATA_ROOT")
    if root is not None:
        try:
            return load_mnist("test", root, "fashion-mnist")
        except InputError:
            pass  # no Fashion-MNIST under this root: fall back to the bundled subset
    folder = Path(str(resources.files("brittle") / "_data" / "fashion-mnist"))
    x = _read_xz_idx(folder / "t10k-images-first5000-idx3-ubyte.xz")
    y = _read_xz_idx(folder / "t10k-labels-first5000-idx1-ubyte.xz")
    from .loading import FASHION_MNIST_CLASSES

    return validate(torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                    torch.from_numpy(y.astype(np.int64)), num_classes=10, name="fashion-mnist:test[:5000]",
                    class_names=FASHION_MNIST_CLASSES)


def uniform_noise(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> Data:
    return _images(_rng("uniform", seed).random((n, *shape), dtype=np.float32), "uniform")


def gaussian_noise(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0, mean: float = 0.5,
                   std: float = 0.25) -> Data:
    x = _rng("gaussian", seed).normal(mean, std, size=(n, *shape))
    return _images(np.clip(x, 0.0, 1.0), "gaussian")


def rotated(source: Any, k: int = 1) -> Data:
    d = as_data(source)
    return _images(torch.rot90(d.x, k, dims=(-2, -1)), "rotated")


def inverted(source: Any) -> Data:
    d = as_data(source)
    lo, hi = d.domain
    return _images(lo + hi - d.x, "inverted")


def permuted(source: Any, seed: int = 0) -> Data:
    d = as_data(source)
    flat = d.x.reshape(len(d), -1)
    perm = torch.from_numpy(_rng("permuted", seed).permutation(flat.shape[1]))
    return _images(flat[:, perm].reshape(d.x.shape), "permuted")


def digits_mnist_framing() -> Data:
    import torch.nn.functional as F

    from .loading import load_digits

    d = load_digits()
    x = F.interpolate(d.x, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x.clamp(0.0, 1.0), (4, 4, 4, 4))
    return _images(x, "digits")


def load_ood_set(name: str, source: Any = None, *, n: int | None = None, seed: int = 0,
                 root: str | os.PathLike | None = None) -> Data:
    """The OOD set ``name`` (see the module table). ``source``: the ID test images that ``rotated``,
    ``inverted`` and ``permuted`` transform and whose count sets the noise sets' default size."""
    if name not in OOD_SETS:
        raise InputError(f"unknown OOD set {name!r}", f"use one of {', '.join(OOD_SETS)}, or pass your own data")
    src = as_data(source) if source is not None else None
    if name in ("rotated", "inverted", "permuted") and src is None:
        raise InputError(f"the {name!r} set transforms in-distribution images, none given",
                         "pass source= the ID test data")
    size = n if n is not None else (len(src) if src is not None else 5000)
    if not isinstance(size, int) or size < 1:
        raise InputError(f"n must be a positive integer, got {n!r}", "pass e.g. n=1000")
    shape = tuple(src.x.shape[1:]) if src is not None else (1, 28, 28)
    if name == "fashion-mnist":
        d = load_fashion_mnist_test(root)
    elif name == "uniform":
        return uniform_noise(size, shape, seed)
    elif name == "gaussian":
        return gaussian_noise(size, shape, seed)
    elif name == "rotated":
        d = rotated(src)
    elif name == "inverted":
        d = inverted(src)
    elif name == "permuted":
        d = permuted(src, seed)
    else:
        d = digits_mnist_framing()
    d = validate(d.x, None, name=d.name if name == "fashion-mnist" else name)
    return d if n is None or n >= len(d) else d.subset(slice(0, n))
