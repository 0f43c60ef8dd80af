"""Distribution shifts offline: MNIST-C-style corruptions and test streams for test-time adaptation.

Every corruption maps images ``(N, C, H, W)`` inside the data's domain to images inside the same domain,
at a severity 1 (mild) … 5 (severe), deterministically from a seed. The random draws of a corruption depend
only on the seed, the corruption's name and the image's position — not on the severity — so the same
image gets the same noise pattern / rotation direction / displacement field at every severity, scaled up
(common random numbers: severity is monotone per image where that is meaningful). Only numpy and
scipy.ndimage are used (no torchvision).

Streams (`Stream`: one `Data` plus named segments) feed `brittle.adaptation`:

- `shift_stream`: one or several corruptions, each on its own images (or the same ones), in sequence;
- `continual_stream`: the continual-TTA protocol — the corruptions visited one after another, each on a
  seeded permutation of the test images;
- `label_sorted`: the samples of a stream sorted by label (temporally correlated, non-i.i.d.);
- `class_imbalanced`: a long-tailed subsample (class ``k`` kept with rate ``imbalance^(-rank/(K-1))``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from .loading import Data

SEVERITIES = (1, 2, 3, 4, 5)

# --------------------------------------------------------------------------------------------
# The corruptions: (images in [0, 1] as float64 (N, C, H, W), severity, rng) -> images in [0, 1]
# --------------------------------------------------------------------------------------------

_Fn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + sigma * rng.standard_normal(x.shape)


def _shot_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # photon noise: Poisson(lam * x) / lam, drawn by inverting the CDF of the same uniforms at every severity
    lam = (60.0, 25.0, 12.0, 5.0, 3.0)[s - 1]
    u = rng.random(x.shape)
    rate = lam * x
    pmf = np.exp(-rate)
    cdf = pmf.copy()
    counts = np.zeros_like(x)
    for k in range(1, int(lam + 10 * np.sqrt(lam) + 10)):
        below = cdf < u
        if not below.any():
            break
        counts += below
        pmf = pmf * rate / k
        cdf += pmf
    return counts / lam


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    # both draws of a pixel side by side, image after image: the first k images get the same noise whatever N is
    draws = rng.random((*x.shape, 2))
    u, salt = draws[..., 0], draws[..., 1] < 0.5
    out = x.copy()
    hit = u < amount
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def _per_image(x: np.ndarray, fn: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = fn(x[i, c], i)
    return out


def _gaussian_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.6, 0.8, 1.0, 1.3, 1.6)[s - 1]
    return ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="constant")


def _line_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length))
    c = (length - 1) / 2
    for t in np.linspace(-c, c, 4 * length):
        r, q = c - t * np.sin(angle), c + t * np.cos(angle)
        r0, q0 = int(np.floor(r)), int(np.floor(q))
        for dr, wr in ((0, 1 - (r - r0)), (1, r - r0)):
            for dq, wq in ((0, 1 - (q - q0)), (1, q - q0)):
                if 0 <= r0 + dr < length and 0 <= q0 + dq < length:
                    k[r0 + dr, q0 + dq] += wr * wq
    return k / k.sum()


def _motion_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    length = (3, 5, 7, 9, 11)[s - 1]
    angles = rng.uniform(0, np.pi, size=x.shape[0])
    return _per_image(x, lambda im, i: ndimage.convolve(im, _line_kernel(length, angles[i]), mode="constant"))


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.5, 0.4, 0.3, 0.2, 0.1)[s - 1]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


def _brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]


def _fog(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # low-frequency noise: a coarse random field (a quarter of the resolution) upsampled smoothly, in [0, 1]
    a = (0.3, 0.45, 0.6, 0.8, 1.0)[s - 1]
    n, ch, h, w = x.shape
    gh, gw = max(2, h // 4), max(2, w // 4)
    coarse = rng.random((n, 1, gh, gw))
    # cubic-spline upsampling is linear: apply it as two small matrices (zoom of the identity)
    up_h = ndimage.zoom(np.eye(gh), (h / gh, 1), order=3, mode="reflect", grid_mode=True)[:h]
    up_w = ndimage.zoom(np.eye(gw), (w / gw, 1), order=3, mode="reflect", grid_mode=True)[:w]
    field_ = np.einsum("ncij,hi,wj->nchw", coarse, up_h, up_w, optimize=True)
    lo = field_.min(axis=(1, 2, 3), keepdims=True)
    hi = field_.max(axis=(1, 2, 3), keepdims=True)
    field_ = (field_ - lo) / np.maximum(hi - lo, 1e-12)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + a * field_) * peak / np.maximum(peak + a, 1e-12)


def _affine(x: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply per-image 2x2 matrices (output coords -> input coords) about the image centre."""
    h, w = x.shape[2:]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])

    def one(im: np.ndarray, i: int) -> np.ndarray:
        m = matrices[i]
        return ndimage.affine_transform(im, m, offset=centre - m @ centre, order=1, mode="constant", cval=0.0)
    return _per_image(x, one)


def _rotate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    deg = (10.0, 20.0, 30.0, 45.0, 60.0)[s - 1]
    theta = np.deg2rad(deg) * rng.choice([-1.0, 1.0], size=x.shape[0])
    c, si = np.cos(theta), np.sin(theta)
    return _affine(x, np.stack([np.stack([c, -si], 1), np.stack([si, c], 1)], 1))


def _shear(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    k = (0.1, 0.2, 0.3, 0.45, 0.6)[s - 1] * rng.choice([-1.0, 1.0], size=x.shape[0])
    one, zero = np.ones_like(k), np.zeros_like(k)
    return _affine(x, np.stack([np.stack([one, zero], 1), np.stack([k, one], 1)], 1))


def _zoom(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    scale = (0.85, 0.75, 0.65, 0.55, 0.45)[s - 1]  # the digit shrinks to this fraction of its size
    m = np.repeat((np.eye(2) / scale)[None], x.shape[0], axis=0)
    return _affine(x, m)


def _elastic(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # Simard et al. (2003): a random displacement field smoothed by a Gaussian (sigma 4 px), scaled by alpha
    alpha = (10.0, 20.0, 30.0, 40.0, 50.0)[s - 1]
    n, _, h, w = x.shape
    raw = rng.uniform(-1, 1, size=(n, 2, h, w))
    disp = ndimage.gaussian_filter(raw, sigma=(0, 0, 4, 4), mode="constant") * alpha
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")

    def one(im: np.ndarray, i: int) -> np.ndarray:
        coords = np.stack([rows + disp[i, 0], cols + disp[i, 1]])
        return ndimage.map_coordinates(im, coords, order=1, mode="constant", cval=0.0)
    return _per_image(x, one)


def _pixelate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[2:]
    side = (0.65, 0.5, 0.4, 0.32, 0.25)[s - 1]  # the image is reduced to this fraction of its side

    def blocks(n: int) -> np.ndarray:  # (n, m) one-hot: which of m blocks each of n pixels falls in
        m = max(1, round(n * side))
        return np.eye(m)[np.minimum((np.arange(n) * m) // n, m - 1)]
    bh, bw = blocks(h), blocks(w)
    small = np.einsum("nchw,hi,wj->ncij", x, bh / bh.sum(0), bw / bw.sum(0), optimize=True)  # block means
    return np.einsum("ncij,hi,wj->nchw", small, bh, bw, optimize=True)  # nearest-neighbour up


def _invert(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    a = (0.6, 0.7, 0.8, 0.9, 1.0)[s - 1]  # blend towards the negative; severity 5 is the full negative
    return (1 - a) * x + a * (1 - x)


CORRUPTIONS: dict[str, _Fn] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur, "motion_blur": _motion_blur, "contrast": _contrast, "brightness": _brightness,
    "fog": _fog, "rotate": _rotate, "shear": _shear, "zoom": _zoom, "elastic": _elastic, "pixelate": _pixelate,
    "invert": _invert,
}
#: Names of the corruptions, in the order of the continual stream.
CORRUPTION_NAMES: tuple[str, ...] = tuple(CORRUPTIONS)


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise InputError(f"unknown corruption {name!r}", f"use one of {', '.join(CORRUPTION_NAMES)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise InputError(f"severity of {name} must be an integer 1..5, got {severity!r}",
                         f"pass e.g. {name}:3")


def _as_images(data: Any) -> Data:
    from .loading import as_data

    d = as_data(data)
    if d.x.ndim != 4:
        raise InputError(f"corruptions need images of shape (N, C, H, W), got {tuple(d.x.shape)}",
                         "reshape the inputs to (N, C, H, W), e.g. x.reshape(-1, 1, 28, 28)")
    if min(d.x.shape[2:]) < 4:
        raise InputError(f"images of {tuple(d.x.shape[2:])} pixels are too small to corrupt", "use images of at least 4x4")
    return d


def corrupt(data: Any, name: str, severity: int, *, seed: int = 0) -> Data:
    """``data`` (a `Data` or anything `as_data` accepts, images ``(N, C, H, W)``) under corruption ``name``.

    Deterministic for ``(seed, name)``; the result stays inside the data's domain (values are clipped).
    The name of the result is ``"<name of data>+<corruption>:<severity>"``.
    """
    _check(name, severity)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0")
    d = _as_images(data)
    lo, hi = d.domain
    x = (d.x.double().numpy() - lo) / (hi - lo)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    out = np.clip(CORRUPTIONS[name](x, int(severity), rng), 0.0, 1.0) * (hi - lo) + lo
    xt = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).clamp_(lo, hi)
    return Data(xt, d.y, d.domain, d.num_classes, f"{d.name}+{name}:{int(severity)}", d.class_names)


def parse_shifts(text: str | Sequence[str] | None) -> list[tuple[str, int]]:
    """``"gaussian_noise:3,fog:5"`` → ``[("gaussian_noise", 3), ("fog", 5)]`` (also ``"all:3"``: every
    corruption at severity 3; ``"clean"`` / ``"none"``: no corruption, kept as ``("clean", 0)``)."""
    if text is None:
        return []
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not parts:
        raise InputError("no shift given", "pass e.g. --shift gaussian_noise:3,fog:5")
    shifts: list[tuple[str, int]] = []
    for part in parts:
        if part in ("clean", "none"):
            shifts.append(("clean", 0))
            continue
        name, sep, sev = part.partition(":")
        if not sep:
            raise InputError(f"shift {part!r} has no severity", f"write NAME:SEVERITY, e.g. {part}:3")
        try:
            severity = int(sev)
        except ValueError:
            raise InputError(f"shift {part!r}: severity {sev!r} is not an integer 1..5", f"write e.g. {name}:3") from None
        if name == "all":
            _check(CORRUPTION_NAMES[0], severity)
            shifts += [(n, severity) for n in CORRUPTION_NAMES]
            continue
        _check(name, severity)
        shifts.append((name, severity))
    return shifts


def apply_shift(data: Any, shift: str | tuple[str, int], *, seed: int = 0) -> Data:
    """``data`` under one shift ``"NAME:SEVERITY"`` (or ``(name, severity)``; ``"clean"`` returns it as is)."""
    name, severity = parse_shifts(shift)[0] if isinstance(shift, str) else shift
    if isinstance(shift, str) and len(parse_shifts(shift)) != 1:
        raise InputError(f"expected one shift, got {shift!r}", "pass a single NAME:SEVERITY")
    if name == "clean":
        return _as_images(data)
    return corrupt(data, name, severity, seed=seed)


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` of a stream come from ``name`` (a corruption ``NAME:SEVERITY`` or ``clean``)."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class Stream:
    """A test stream: the samples in the order they arrive, and which shift each stretch of it comes from."""

    data: Data
    segments: tuple[Segment, ...] = field(default=())
    description: str = ""

    def __len__(self) -> int:
        return len(self.data)

    def segment_names(self) -> np.ndarray:
        """The segment name of every sample (``len(self)`` strings)."""
        names = np.empty(len(self), dtype=object)
        names[:] = "stream"
        for seg in self.segments:
            names[seg.start:seg.stop] = seg.name
        return names.astype(str)


def _stream_of(parts: list[tuple[str, Data]], base: Data, description: str) -> Stream:
    x = torch.cat([d.x for _, d in parts])
    y = None if any(d.y is None for _, d in parts) else torch.cat([d.y for _, d in parts])
    segments, start = [], 0
    for label, d in parts:
        segments.append(Segment(label, start, start + len(d)))
        start += len(d)
    name = base.name + "+" + ("+".join(label for label, _ in parts) if len(parts) <= 3 else f"{len(parts)} shifts")
    return Stream(Data(x.contiguous(), y, base.domain, base.num_classes, name, base.class_names), tuple(segments),
                  description)


def shift_stream(data: Any, shifts: str | Sequence[tuple[str, int]], *, seed: int = 0, per_shift: int | None = None,
                 same_images: bool = False) -> Stream:
    """A stream visiting ``shifts`` in sequence.

    Each shift gets ``per_shift`` images (default: all of ``data``): with ``same_images`` the first
    ``per_shift`` images every time, otherwise a seeded permutation of the images per shift (different
    images, as in continual-TTA benchmarks).
    """
    base = _as_images(data)
    items = parse_shifts(shifts) if isinstance(shifts, str) else list(shifts)
    if not items:
        raise InputError("no shift given", "pass at least one NAME:SEVERITY")
    for name, severity in items:
        if name != "clean":
            _check(name, severity)
    n = len(base) if per_shift is None else int(per_shift)
    if not 1 <= n <= len(base):
        raise InputError(f"per_shift must be in 1..{len(base)}, got {per_shift}", "pass a number of images the data has")
    rng = np.random.default_rng([int(seed), 7])
    parts = []
    for name, severity in items:
        idx = np.arange(n) if same_images else rng.permutation(len(base))[:n]
        chunk = base.subset(idx)
        label = "clean" if name == "clean" else f"{name}:{severity}"
        parts.append((label, chunk if name == "clean" else corrupt(chunk, name, severity, seed=seed)))
    return _stream_of(parts, base, "shifts in sequence: " + ", ".join(label for label, _ in parts))


def continual_stream(data: Any, severity: int = 5, corruptions: Sequence[str] | None = None, *, seed: int = 0,
                     per_corruption: int | None = None) -> Stream:
    """The continual test-time adaptation protocol: every corruption (default all, in `CORRUPTION_NAMES`
    order) at ``severity``, one after another, each on a seeded permutation of ``per_corruption`` images."""
    names = list(corruptions) if corruptions is not None else list(CORRUPTION_NAMES)
    stream = shift_stream(data, [(n, severity) for n in names], seed=seed, per_shift=per_corruption)
    return Stream(stream.data, stream.segments, f"continual: {len(names)} corruptions at severity {severity}")


def label_sorted(stream: Stream | Any) -> Stream:
    """The stream with the samples of each segment sorted by label (stable): the classes arrive one after
    another — the temporally correlated, non-i.i.d. stream that breaks batch statistics."""
    st = stream if isinstance(stream, Stream) else Stream(_as_images(stream), description="")
    d = st.data
    if d.y is None:
        raise InputError("a label-sorted stream needs labels", "pass labelled data")
    segments = st.segments or (Segment(d.name, 0, len(d)),)
    order = np.concatenate([seg.start + np.argsort(d.y[seg.start:seg.stop].numpy(), kind="stable")
                            for seg in segments])
    return Stream(d.subset(order), st.segments, (st.description + "; " if st.description else "") + "label-sorted")


def class_imbalanced(stream: Stream | Any, imbalance: float = 10.0, *, seed: int = 0) -> Stream:
    """A long-tailed subsample of the stream (order kept): in each segment the class of rank ``r`` (a seeded
    random ranking of the classes) is kept with rate ``imbalance ** (-r / (K - 1))`` — the most frequent
    class is ``imbalance`` times more frequent than the rarest."""
    st = stream if isinstance(stream, Stream) else Stream(_as_images(stream), description="")
    d = st.data
    if d.y is None:
        raise InputError("a class-imbalanced stream needs labels", "pass labelled data")
    if not (isinstance(imbalance, (int, float)) and np.isfinite(imbalance) and imbalance >= 1):
        raise InputError(f"imbalance must be a number >= 1, got {imbalance!r}", "pass e.g. imbalance=10")
    rng = np.random.default_rng([int(seed), 11])
    k = int(d.num_classes or int(d.y.max()) + 1)
    rank = rng.permutation(k)
    rate = float(imbalance) ** (-rank / max(k - 1, 1))
    keep = rng.random(len(d)) < rate[d.y.numpy()]
    segments, kept, start = [], [], 0
    for seg in st.segments or (Segment(d.name, 0, len(d)),):
        idx = np.arange(seg.start, seg.stop)[keep[seg.start:seg.stop]]
        if len(idx) == 0:
            continue
        kept.append(idx)
        segments.append(Segment(seg.name, start, start + len(idx)))
        start += len(idx)
    order = np.concatenate(kept)
    desc = (st.description + "; " if st.description else "") + f"class-imbalanced (factor {imbalance:g})"
    return Stream(d.subset(order), tuple(segments) if st.segments else (), desc)
