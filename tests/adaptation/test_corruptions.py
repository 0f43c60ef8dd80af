"""Corruptions and streams: deterministic per seed, inside the domain, severity-monotone, bad inputs refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brittle.data import (CORRUPTION_NAMES, Data, apply_shift, class_imbalanced, continual_stream, corrupt,
                          label_sorted, load_mnist, parse_shifts, shift_stream)
from brittle.errors import BrittleError

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog", "rotate", "shear", "elastic"}


@pytest.fixture(scope="module")
def digits() -> Data:
    return load_mnist("test").head(48)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_deterministic_in_domain_and_severity_monotone(digits, name):
    dist = []
    for sev in range(1, 6):
        a = corrupt(digits, name, sev, seed=3)
        assert torch.equal(a.x, corrupt(digits, name, sev, seed=3).x)  # same seed, same images
        assert a.x.shape == digits.x.shape and a.x.dtype == torch.float32
        assert torch.equal(a.y, digits.y) and a.name == f"{digits.name}+{name}:{sev}"
        assert float(a.x.min()) >= 0.0 and float(a.x.max()) <= 1.0
        dist.append(float((a.x - digits.x).abs().mean()))
    assert all(d1 < d2 for d1, d2 in zip(dist, dist[1:])), dist  # stronger with severity
    assert dist[0] > 1e-3
    if name in RANDOM:
        assert not torch.equal(corrupt(digits, name, 3, seed=3).x, corrupt(digits, name, 3, seed=4).x)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_the_first_images_do_not_depend_on_how_many_follow(digits, name):
    """The draws of an image depend only on the seed, the corruption and its position: the first k corrupted
    images of --limit 10 and of --limit 48 are the same (impulse_noise drew its salt after every image's hits)."""
    for sev in (1, 3, 5):
        full = corrupt(digits, name, sev, seed=2).x
        for k in (1, 10, 31):
            assert torch.equal(corrupt(digits.head(k), name, sev, seed=2).x, full[:k]), (name, sev, k)


def test_other_domains_and_channels():
    x = torch.rand(4, 3, 12, 12) * 2 - 1
    d = Data(x, torch.tensor([0, 1, 2, 1]), (-1.0, 1.0), 3)
    for name in CORRUPTION_NAMES:
        out = corrupt(d, name, 4)
        assert out.x.shape == x.shape and out.domain == (-1.0, 1.0)
        assert float(out.x.min()) >= -1 and float(out.x.max()) <= 1


def test_bad_inputs(digits):
    for name, sev in (("snow", 3), ("fog", 0), ("fog", 6), ("fog", 2.5), ("fog", True)):
        with pytest.raises(BrittleError):
            corrupt(digits, name, sev)
    with pytest.raises(BrittleError):
        corrupt(digits, "fog", 3, seed=-1)
    with pytest.raises(BrittleError):
        corrupt(torch.rand(4, 784), "fog", 3)  # flat inputs: no images
    for text in ("fog", "fog:x", "fog:9", "mist:2", "", ","):
        with pytest.raises(BrittleError):
            parse_shifts(text)
    assert parse_shifts("fog:5, invert:1") == [("fog", 5), ("invert", 1)]
    assert len(parse_shifts("all:2")) == len(CORRUPTION_NAMES)
    assert torch.equal(apply_shift(digits, "clean").x, digits.x)


def test_streams(digits):
    st = shift_stream(digits, "fog:2,clean,invert:5", per_shift=20, seed=1)
    assert len(st) == 60 and [s.name for s in st.segments] == ["fog:2", "clean", "invert:5"]
    assert torch.equal(st.data.x, shift_stream(digits, "fog:2,clean,invert:5", per_shift=20, seed=1).data.x)
    names = st.segment_names()
    assert list(names[:20]) == ["fog:2"] * 20 and names[-1] == "invert:5"
    cont = continual_stream(digits, 5, ["gaussian_noise", "fog"], per_corruption=10)
    assert [s.name for s in cont.segments] == ["gaussian_noise:5", "fog:5"] and len(cont) == 20
    srt = label_sorted(st)
    for seg in srt.segments:
        y = srt.data.y[seg.start:seg.stop].numpy()
        assert np.all(np.diff(y) >= 0)
    big = shift_stream(load_mnist("test").head(3000), "clean")
    imb = class_imbalanced(big, 10.0, seed=0)
    counts = np.bincount(imb.data.y.numpy(), minlength=10)
    assert counts.max() / counts.min() > 5 and len(imb) < len(big)
    with pytest.raises(BrittleError):
        class_imbalanced(big, 0.5)
    with pytest.raises(BrittleError):
        shift_stream(digits, "fog:2", per_shift=10_000)
