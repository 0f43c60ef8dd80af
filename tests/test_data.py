"""Data layer: every accepted form, and every rejected input with its message."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import brittle
from brittle.data.loading import as_data, load_data, load_mnist, load_npz, read_idx
from brittle.errors import InputError


def test_bundled_mnist_test_split_is_the_real_one():
    d = load_mnist()
    assert d.x.shape == (10000, 1, 28, 28) and d.x.dtype == torch.float32
    assert d.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first MNIST test labels
    assert np.bincount(d.y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    assert d.num_classes == 10


def test_bundled_files_match_shared_checksums(shared_data):
    sums = dict(line.split()[::-1] for line in (shared_data / "SHA256SUMS").read_text().splitlines() if line.strip())
    from importlib import resources
    folder = resources.files("brittle") / "_data" / "mnist"
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        key = next(k for k in sums if k.endswith("mnist/" + name) and "fashion" not in k)
        assert digest == sums[key]


def test_mnist_and_fashion_from_a_local_folder(shared_data):
    train = load_mnist("train", shared_data)
    assert train.x.shape == (60000, 1, 28, 28)
    fashion = load_data("fashion-mnist:test", shared_data)
    assert fashion.x.shape == (10000, 1, 28, 28) and fashion.class_names[9] == "Ankle boot"
    assert not torch.equal(fashion.x[:5], load_mnist().x[:5])


def test_fashion_without_root_names_the_fix(monkeypatch):
    monkeypatch.delenv("BRITTLE_DATA_ROOT", raising=False)
    with pytest.raises(InputError, match=r"fashion-mnist:test needs a data folder: of its splits only the MNIST test "
                                         r"split ships with brittle whole \(the first 5,000 Fashion-MNIST test images "
                                         r"ship as the OOD set: .*load_fashion_mnist_test\(\)\).*--data-root"):
        load_data("fashion-mnist")


def test_digits():
    d = load_data("digits")
    assert d.x.shape == (1797, 1, 8, 8) and float(d.x.max()) == 1.0 and d.num_classes == 10


def test_tensors_arrays_tuples_datasets_loaders_agree():
    x = torch.rand(20, 1, 4, 4)
    y = torch.randint(0, 3, (20,))
    forms = [
        as_data(x, y),
        as_data(x.numpy(), y.numpy()),
        as_data((x, y)),
        as_data(TensorDataset(x, y)),
        as_data(DataLoader(TensorDataset(x, y), batch_size=7)),
        as_data([{"x": xi, "y": yi} for xi, yi in zip(x, y)] and _DictDataset(x, y)),
    ]
    for d in forms:
        assert torch.equal(d.x, x) and torch.equal(d.y, y)


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def test_npz_roundtrip_and_pickle_refused(tmp_path):
    x = np.random.rand(5, 3).astype(np.float32)
    np.savez(tmp_path / "ok.npz", x=x, y=np.array([0, 1, 2, 1, 0]))
    d = load_data(str(tmp_path / "ok.npz"))
    assert np.allclose(d.x.numpy(), x) and d.y.tolist() == [0, 1, 2, 1, 0]
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled objects"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "nox.npz", images=x)
    with pytest.raises(InputError, match=r"no 'x'"):
        load_npz(tmp_path / "nox.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_npz(tmp_path / "bad.npz")


def test_idx_reader_rejects_corrupt_and_truncated(tmp_path):
    header = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big")
    (tmp_path / "ok").write_bytes(header + bytes(range(5)))
    assert read_idx(tmp_path / "ok").tolist() == [0, 1, 2, 3, 4]
    with gzip.open(tmp_path / "short.gz", "wb") as fh:
        fh.write(header + bytes(3))
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "magic").write_bytes(b"\x1f\x00\x00\x00" + bytes(8))
    with pytest.raises(InputError, match="bad magic"):
        read_idx(tmp_path / "magic")


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (torch.rand(0, 3), None, {}, "empty"),
        (torch.rand(5), None, {}, r"shape \(5,\).*Fix: add a batch dimension"),
        ((torch.rand(4, 3) * 255).to(torch.uint8), None, {}, r"dtype torch.uint8.*Fix: convert with x.float\(\) / 255"),
        (torch.tensor([[0.1, float("nan")], [0.2, 0.3]]), None, {}, "non-finite.*first at index 0"),
        (torch.tensor([[0.1, 0.2], [0.3, float("inf")]]), None, {}, "non-finite.*index 1"),
        (torch.rand(4, 3) * 2 - 0.5, None, {}, "outside the declared input domain.*domain="),
        (torch.rand(4, 3), torch.tensor([0, 1, 2, 3]), {"num_classes": 3}, r"labels range over \[0, 3\].*0..2"),
        (torch.rand(4, 3), torch.tensor([0, -1, 1, 1]), {}, "outside the class indices"),
        (torch.rand(4, 3), torch.tensor([0, 1, 1]), {}, "labels have shape .3,. but there are 4 inputs"),
        (torch.rand(4, 3), torch.tensor([0.5, 1, 1, 0]), {}, "not whole numbers"),
        (torch.rand(4, 3), torch.eye(4)[:, :3], {}, "one-hot"),
        (torch.rand(4, 3), None, {"domain": (1, 0)}, "low < high"),
    ],
)
def test_bad_inputs_are_refused_with_the_fix(x, y, kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        as_data(x, y, **kwargs)
    assert "\n" not in str(info.value) and "Fix:" in str(info.value)


def test_declared_domain_is_respected():
    x = torch.rand(4, 3) * 2 - 1
    d = as_data(x, domain=(-1, 1))
    assert d.domain == (-1.0, 1.0)


def test_ragged_dataset_refused():
    items = [(torch.rand(3), 0), (torch.rand(4), 1)]
    with pytest.raises(InputError, match="different shapes"):
        as_data(_ListDataset(items))


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_unknown_spec_and_missing_folder():
    with pytest.raises(InputError, match="unknown data 'nope'"):
        load_data("nope")
    with pytest.raises(InputError, match="no mnist file"):
        load_mnist("test", "/nonexistent-folder")


def test_subset_head_fingerprint():
    d = brittle.load_mnist().head(10)
    assert len(d) == 10 and len(d.subset([1, 3])) == 2
    assert d.fingerprint() != brittle.load_mnist().head(11).fingerprint()
    assert d.fingerprint() == brittle.load_mnist().head(10).fingerprint()
    with pytest.raises(InputError, match="limit must be >= 1"):
        d.head(0)


def test_torchvision_dataset_without_torchvision_is_clear():
    pytest.importorskip("numpy")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"pip install 'brittle\[vision\]'"):
            load_data("torchvision:CIFAR10")
    else:
        with pytest.raises(InputError):
            load_data("torchvision:NoSuchDataset")


def test_torchvision_dataset_through_a_local_stand_in(monkeypatch, tmp_path):
    """torchvision:NAME builds the dataset class with the root, split and ToTensor, and gives Data in [0, 1]."""
    import sys
    import types

    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    labels = [0, 1, 2, 0, 1, 2]
    seen = {}

    class ToTensor:
        def __call__(self, img):
            return torch.from_numpy(img).permute(2, 0, 1).float() / 255

    class Tiny(torch.utils.data.Dataset):
        def __init__(self, root, train, download, transform):
            seen.update(root=root, train=train, download=download)
            if not (tmp_path / "Tiny").exists():
                raise RuntimeError("Dataset not found. You can use download=True to download it")
            self.transform = transform

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return self.transform(images[i]), labels[i]

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(Tiny=Tiny),
                                 transforms=types.SimpleNamespace(ToTensor=ToTensor))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", fake.transforms)
    with pytest.raises(InputError, match="not found under"):
        load_data("torchvision:Tiny", root=tmp_path)
    (tmp_path / "Tiny").mkdir()
    data = load_data("torchvision:Tiny:train", root=tmp_path)
    assert seen == {"root": str(tmp_path), "train": True, "download": False}  # never downloads by itself
    assert data.x.shape == (6, 3, 8, 8) and data.y.tolist() == labels
    np.testing.assert_allclose(data.x[2].permute(1, 2, 0).numpy(), images[2] / 255, atol=1e-6)
    with pytest.raises(InputError, match="no dataset 'Nope'"):
        load_data("torchvision:Nope", root=tmp_path)


# ------------------------------------------------------------------------------------ npz dtypes and values

@pytest.mark.parametrize(("arrays", "message"), [
    ({"y": np.array(list("7210414959"))}, r"y has dtype <U1 \(text\)\. Fix: pass integer class indices"),
    ({"y": np.array([b"7"] * 10)}, r"y has dtype \|S1 \(bytes\)"),
    ({"y": np.arange(10).astype("datetime64[D]")}, r"y has dtype datetime64\[D\] \(dates and times\)"),
    ({"y": np.arange(10).astype("timedelta64[s]")}, r"y has dtype timedelta64\[s\] \(time spans\)"),
    ({"x": np.full((10, 4), "0.5")}, r"x has dtype <U3 \(text\)\. Fix: pass x as floating-point numbers"),
    ({"x": np.zeros((10, 4), dtype=np.longdouble)}, r"x has dtype float128 \(long double, which torch cannot hold\)"
                                                    r"\. Fix: convert with x\.astype\(np\.float64\)"),
    ({"x": np.zeros((10, 4), dtype=[("a", "f4")])}, r"x has dtype .* \(raw or structured records\)"),
    ({"x": np.full((10, 4), 1e300)}, r"x has values too large for float32 \(\|x\| up to 1e\+300, float32 holds up "
                                     r"to 3\.403e\+38\) in 10 sample\(s\), first at index 0"),
    ({"y": np.full(10, 1e20)}, r"labels range over \[1e\+20, 1e\+20\], outside the class indices"),
    ({"y": np.array([1, 2] + [2 ** 63 + 5] * 8, dtype=np.uint64)}, r"labels range over \[1, 9\.22337e\+18\]"),
])
def test_npz_arrays_that_are_not_numbers_or_do_not_fit_are_refused_by_name(tmp_path, arrays, message):
    if "longdouble" in message or "float128" in message:
        if np.dtype(np.longdouble).itemsize <= 8:
            pytest.skip("long double is float64 on this platform")
    values = {"x": np.random.default_rng(0).random((10, 4)), "y": np.arange(10) % 3, **arrays}
    np.savez(tmp_path / "d.npz", **values)
    with pytest.raises(InputError, match=message) as info:
        load_npz(tmp_path / "d.npz")
    assert "\n" not in str(info.value) and "Fix:" in str(info.value)


def test_finite_float64_inputs_within_float32_range_still_load(tmp_path):
    x = np.random.default_rng(0).random((6, 4))  # float64 in [0, 1]
    np.savez(tmp_path / "f64.npz", x=x, y=np.full(6, 2.0))
    d = load_npz(tmp_path / "f64.npz")
    assert d.x.dtype == torch.float32 and d.y.tolist() == [2] * 6
    as_data(np.full((2, 3), 3e38), domain=(0.0, 3.3e38))  # large but float32-representable: accepted


# ------------------------------------------------------------------------------------ names of the data

def _write_idx(folder, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / stem).write_bytes(header + arr.astype(np.uint8).tobytes())


def test_data_is_named_by_where_it_comes_from(tmp_path, monkeypatch):
    """An idx folder is named by the folder (not ``mnist:test``), an .npz by its path as given (two files with one
    stem are two data sets); the bundled data sets keep their names."""
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "fash_idx", rng.integers(0, 256, (5, 28, 28)), np.arange(5))
    monkeypatch.chdir(tmp_path)
    idx = load_data("fash_idx")
    assert idx.name == "fash_idx (idx t10k)" and idx.class_names is None and len(idx) == 5
    assert load_data(str(tmp_path / "fash_idx") + "/").name == f"{tmp_path / 'fash_idx'} (idx t10k)"
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        np.savez(tmp_path / sub / "ok.npz", x=rng.random((3, 4)), y=np.arange(3))
    assert load_data("a/ok.npz").name == "a/ok.npz" and load_data("b/ok.npz").name == "b/ok.npz"
    assert load_data("mnist").name == "mnist:test" and load_data("mnist", limit=3).name == "mnist:test"
    from brittle.data.ood_sets import load_fashion_mnist_test

    monkeypatch.delenv("BRITTLE_DATA_ROOT", raising=False)
    assert load_fashion_mnist_test().name == "fashion-mnist:test[:5000]"
    assert load_data("digits").name == "digits"


def test_limit_is_checked_before_anything_is_read():
    for bad in (0, -3):
        with pytest.raises(InputError, match=f"limit must be >= 1, got {bad}"):
            load_data("no-such-file.npz", limit=bad)


# ------------------------------------------------------------------------------------ torchvision split=

def _fake_torchvision(monkeypatch, dataset_cls):
    import sys
    import types

    class ToTensor:
        def __call__(self, img):
            return torch.from_numpy(img).permute(2, 0, 1).float() / 255

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(**{dataset_cls.__name__: dataset_cls}),
                                 transforms=types.SimpleNamespace(ToTensor=ToTensor))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", fake.transforms)


def test_torchvision_split_datasets_and_limit(monkeypatch, tmp_path):
    """Datasets named by split= (torchvision's SVHN signature) load; without their files the error is the same
    one line as for train= datasets, with no download advice; --limit converts only the images it keeps."""
    images = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    read = []

    class SVHN(torch.utils.data.Dataset):
        def __init__(self, root, split="train", transform=None, target_transform=None, download=False):
            if not (tmp_path / "svhn").exists():
                raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
            if split not in ("train", "test", "extra"):
                raise ValueError(f"Unknown value '{split}' for argument split.")
            self.split, self.transform = split, transform

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            read.append(i)
            return self.transform(images[i]), i % 10

    _fake_torchvision(monkeypatch, SVHN)
    with pytest.raises(InputError) as info:
        load_data("torchvision:SVHN", root=tmp_path)
    text = str(info.value)
    assert text.startswith(f"torchvision SVHN (test) not found under {tmp_path} (Dataset not found or corrupted)")
    assert "download=True" not in text and "--data-root" in text and "\n" not in text
    (tmp_path / "svhn").mkdir()
    with pytest.raises(InputError, match="torchvision SVHN has no split 'val'"):
        load_data("torchvision:SVHN:val", root=tmp_path)
    data = load_data("torchvision:SVHN:train", root=tmp_path, limit=7)
    assert len(data) == 7 and sorted(set(read)) == list(range(7))  # only the kept images were converted
    np.testing.assert_allclose(data.x[3].permute(1, 2, 0).numpy(), images[3] / 255, atol=1e-6)
    assert data.name == "SVHN:train" and data.y.tolist() == list(range(7))


def test_cli_torchvision_split_dataset_without_files(monkeypatch, tmp_path, capsys):
    from brittle.cli import main

    class SVHN:
        def __init__(self, root, split="train", transform=None, target_transform=None, download=False):
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    _fake_torchvision(monkeypatch, SVHN)
    out = tmp_path / "out"
    code = main(["--quiet", "margins", "-m", "standard", "-d", "torchvision:SVHN", "--data-root", "/nowhere",
                 "-o", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: torchvision SVHN (test) not found under /nowhere") and "Fix: put" in lines[0]
    assert "Traceback" not in err and "bug in brittle" not in err and not out.exists()


_X6 = torch.rand(6, 3)


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2.7, 0, 1, 2], "labels are floats that are not whole numbers"),
    ([np.float32(0), 1, 2, 0, 1, np.float32(2.5)], "labels are floats that are not whole numbers"),
    ([True, False, True, False, True, False], "labels have dtype torch.bool"),
    (["a", "b", "c", "a", "b", "c"], r"dataset item labels are not numbers \(e\.g\. 'a'\)"),
    ([0, 1, 2, 0, 1, None], "1 of 6 items have no label"),
    ([torch.eye(3)[i % 3] for i in range(6)], r"labels have shape \(6, 3\) \(one-hot\?\)"),
])
def test_dataset_labels_get_the_checks_of_tensor_labels(labels, message):
    """Items' labels were cast with int() one by one: 2.7 became 2, bools passed, one-hot rows and strings
    ended in tracebacks, and one missing label dropped every label in silence."""
    with pytest.raises(InputError, match=message):
        as_data(_ListDataset([(x, y) if y is not None else (x,) for x, y in zip(_X6, labels)]))


def test_dataloader_labels_get_the_checks_of_tensor_labels():
    onehot = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    with pytest.raises(InputError, match=r"labels have shape \(6, 3\) \(one-hot\?\).*argmax"):
        as_data(DataLoader(TensorDataset(_X6, onehot), batch_size=4))
    with pytest.raises(InputError, match=r"DataLoader batch labels are not numbers \(e\.g\. 'a'\)"):
        as_data(DataLoader(_ListDataset([(x, "ab"[i % 2]) for i, x in enumerate(_X6)]), batch_size=4))
    fine = as_data(DataLoader(TensorDataset(_X6, torch.tensor([0, 1, 2, 0, 1, 2]).float()), batch_size=4))
    assert fine.y.dtype == torch.int64 and fine.y.tolist() == [0, 1, 2, 0, 1, 2]


def test_a_shuffling_or_dropping_dataloader_is_read_in_the_datasets_order():
    """Per-sample results must line up with the dataset: a shuffled loader used to give them in a random order
    (and an identical re-run read as another run), drop_last silently left samples out."""
    x, y = torch.rand(23, 4), torch.arange(23) % 5
    dataset = TensorDataset(x, y)
    for loader in (DataLoader(dataset, batch_size=5, shuffle=True),
                   DataLoader(dataset, batch_size=5, drop_last=True),
                   DataLoader(dataset, batch_size=5, shuffle=True, drop_last=True)):
        data = as_data(loader)
        assert torch.equal(data.x, x) and torch.equal(data.y, y)
    picked = [17, 3, 9, 4]
    subset = as_data(DataLoader(dataset, batch_size=3, sampler=torch.utils.data.SubsetRandomSampler(picked)))
    assert torch.equal(subset.x, x[sorted(picked)]) and torch.equal(subset.y, y[sorted(picked)])
    model = torch.nn.Linear(4, 5).eval()
    margins = brittle.logit_margins(model, DataLoader(dataset, batch_size=5, shuffle=True), device="cpu")
    with torch.no_grad():
        top2 = model(x).topk(2, 1)
    assert torch.equal(torch.as_tensor(margins.pred), top2.indices[:, 0])
    torch.testing.assert_close(torch.as_tensor(margins.margin), top2.values[:, 0] - top2.values[:, 1])
    for sampler in (torch.utils.data.WeightedRandomSampler(torch.ones(23), 23),
                    torch.utils.data.RandomSampler(dataset, replacement=True)):
        with pytest.raises(InputError, match=r"draws its samples at random.*Fix: pass the dataset itself"):
            as_data(DataLoader(dataset, batch_size=5, sampler=sampler))
