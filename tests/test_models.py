"""Model layer: accepted model forms, adapters, devices, safe checkpoint loading."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import brittle
from brittle.errors import ModelError
from brittle.models.loading import (LogitsAdapter, load_checkpoint, load_model, model_fingerprint, prepare_model,
                                    resolve_device, save_torchscript, weights_fingerprint)
from brittle.models.zoo.architectures import mlp


def _net():
    torch.manual_seed(0)
    return mlp(6, (5,), 3)


def test_train_mode_is_switched_off_with_a_warning():
    net = nn.Sequential(_net(), nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="train mode"):
        out = prepare_model(net, device="cpu")
    assert not out.training


class _ReadsTraining(nn.Module):
    def forward(self, x):
        return nn.functional.dropout(x, 0.5, training=self.training)


def test_the_train_mode_warning_comes_only_where_the_mode_changes_the_output():
    """A plain Linear/ReLU model in train mode computes what it computes in eval mode: it got the warning
    on every call. Dropout, running statistics and user code reading self.training still warn."""
    for quiet in (_net(), nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3, track_running_stats=False))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not prepare_model(quiet.train(), device="cpu").training
            brittle.logit_margins(quiet.train(), torch.rand(4, 6), device="cpu")
    for loud in (nn.Sequential(_net(), nn.Dropout()), nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3)),
                 nn.Sequential(_net(), _ReadsTraining())):
        with pytest.warns(UserWarning, match="train mode"):
            prepare_model(loud.train(), device="cpu")
        with pytest.warns(UserWarning, match="train mode"):
            brittle.logit_margins(loud.train(), torch.rand(4, 6), device="cpu")
        assert loud.training


def test_eval_model_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_model(_net().eval(), device="cpu", sample=torch.rand(2, 6))


class _TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        z = self.net(x)
        return z, z.sum()


class _DictNet(_TupleNet):
    def forward(self, x):
        return {"features": x, "logits": self.net(x)}


class _BadDictNet(_TupleNet):
    def forward(self, x):
        return {"a": self.net(x)}


def test_tuple_and_dict_outputs_are_adapted():
    x = torch.rand(4, 6)
    ref = _net().eval()(x)
    for cls in (_TupleNet, _DictNet):
        with pytest.warns(UserWarning, match="uses element"):
            model = prepare_model(cls().eval(), device="cpu", sample=x)
        assert isinstance(model, LogitsAdapter)
        assert torch.allclose(model(x), ref)
    with pytest.raises(ModelError, match=r"keys \['a'\].*LogitsAdapter"):
        prepare_model(_BadDictNet().eval(), device="cpu", sample=x)


class _FeaturesThenLogits(_TupleNet):
    def forward(self, x):
        return x[:, :4] * 2, self.net(x)  # two matrices: which are the logits?


class _ScalarThenLogits(_TupleNet):
    def forward(self, x):
        z = self.net(x)
        return z.sum(), z


def test_ambiguous_tuple_outputs_are_refused_and_the_one_matrix_is_picked():
    x = torch.rand(4, 6)
    with pytest.raises(ModelError, match=r"\(0: \(2, 4\), 1: \(2, 3\)\).*cannot tell.*LogitsAdapter\(model, select="):
        prepare_model(_FeaturesThenLogits().eval(), device="cpu", sample=x)
    with pytest.warns(UserWarning, match="uses element 1"):  # the only (N, C) matrix, wherever it stands
        model = prepare_model(_ScalarThenLogits().eval(), device="cpu", sample=x)
    assert torch.allclose(model(x), _net().eval()(x))
    chosen = prepare_model(LogitsAdapter(_FeaturesThenLogits().eval(), 1), device="cpu", sample=x)
    assert torch.allclose(chosen(x), _net().eval()(x))


def test_the_logits_adapter_takes_the_mode_of_the_model_it_wraps():
    assert not LogitsAdapter(_TupleNet().eval(), 0).training
    assert LogitsAdapter(_TupleNet().train(), 0).training
    with warnings.catch_warnings():  # an eval-mode model with a tuple output: no train-mode warning
        warnings.simplefilter("error")
        brittle.logit_margins(LogitsAdapter(_TupleNet().eval(), 0), torch.rand(3, 6), device="cpu")


def test_a_float64_model_is_told_to_cast_itself():
    with pytest.raises(ModelError, match=r"parameters are float64 but brittle runs it on float32.*model\.float\(\)"):
        prepare_model(_net().double().eval(), device="cpu", sample=torch.rand(2, 6))


class _Scaled(nn.Module):
    def __init__(self, temperature=1.0, act=torch.relu):
        super().__init__()
        self.lin, self.temperature, self.act = nn.Linear(6, 3), temperature, act

    def forward(self, x):
        return self.act(self.lin(x)) / self.temperature


def test_the_fingerprint_tells_models_with_the_same_weights_apart():
    torch.manual_seed(0)
    relu = mlp(6, (5,), 3)
    tanh = nn.Sequential(*[nn.Tanh() if isinstance(m, nn.ReLU) else copy.deepcopy(m) for m in relu])
    assert tanh.state_dict().keys() == relu.state_dict().keys()  # the same weights behind another activation
    assert model_fingerprint(relu) != model_fingerprint(tanh)
    assert model_fingerprint(relu) == model_fingerprint(copy.deepcopy(relu))  # the same model, another object
    a = _Scaled()
    b = _Scaled(temperature=2.0)
    b.load_state_dict(a.state_dict())
    c = _Scaled(act=torch.tanh)
    c.load_state_dict(a.state_dict())
    prints = {model_fingerprint(m) for m in (a, b, c)}
    assert len(prints) == 3  # a temperature and an activation stored as plain attributes count
    assert weights_fingerprint(a) == weights_fingerprint(b) == weights_fingerprint(c)  # 0.3.0's: weights only
    a.eval()
    assert model_fingerprint(a) == model_fingerprint(a.train())  # train/eval mode is not part of it


_USER_MODEL = """
import torch
from torch import nn


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * 2.0
"""


def _user_model_print(tmp_path, monkeypatch, name, source):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("user_models", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "user_models", module)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return model_fingerprint(module.UserNet())


def test_comments_docstrings_and_layout_of_the_model_class_do_not_change_its_fingerprint(tmp_path, monkeypatch):
    base = _user_model_print(tmp_path, monkeypatch, "v0", _USER_MODEL)
    edited = _USER_MODEL.replace("    def forward(self, x):\n",
                                 '    def forward(self, x):  # doubled\n        """Twice the logits."""\n\n')
    edited = edited.replace("class UserNet(nn.Module):\n", 'class UserNet(nn.Module):\n    """A user\'s net."""\n')
    assert edited != _USER_MODEL
    assert _user_model_print(tmp_path, monkeypatch, "v1", edited) == base  # the same computation: resumable
    changed = _USER_MODEL.replace("* 2.0", "* 3.0")
    assert _user_model_print(tmp_path, monkeypatch, "v2", changed) != base  # a code change is another model


class _Const(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out(x)


@pytest.mark.parametrize(("fn", "message"), [
    (lambda x: torch.zeros(len(x)), r"shape \(2,\).*expected \(2, num_classes\)"),
    (lambda x: torch.zeros(len(x), 1), "1 logit per input"),
    (lambda x: torch.full((len(x), 3), float("nan")), "NaN or infinite"),
    (lambda x: torch.zeros(len(x), 5), "5 logits but the data has 3 classes"),
    (lambda x: x @ torch.zeros(7, 3), "failed on inputs of shape"),
])
def test_wrong_outputs_are_refused(fn, message):
    with pytest.raises(ModelError, match=message):
        prepare_model(_Const(fn), device="cpu", sample=torch.rand(2, 6), num_classes=3)


def test_not_a_module():
    with pytest.raises(ModelError, match="expected a torch.nn.Module"):
        prepare_model(lambda x: x)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu-please")


def test_torchscript_roundtrip(tmp_path):
    net, x = _net().eval(), torch.rand(3, 6)
    save_torchscript(net, tmp_path / "m.pt", x)
    loaded = load_model(str(tmp_path / "m.pt"), device="cpu")
    assert torch.allclose(loaded(x), net(x))


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from brittle.models.zoo.architectures import mlp
        def make(hidden=5):
            return mlp(6, (hidden,), 3)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models:make"
    sys.modules.pop("my_models", None)


def test_factory_plus_state_dict(tmp_path, factory_module):
    net, x = _net().eval(), torch.rand(3, 6)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "w.pt")
    loaded = load_model(factory_module, tmp_path / "w.pt", device="cpu")
    assert torch.allclose(loaded(x), net(x))
    assert model_fingerprint(loaded) == model_fingerprint(net)
    with pytest.raises(ModelError, match="do not fit the model"):
        load_model(factory_module, tmp_path / "w.pt", device="cpu", hidden=4)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/brittle-pwned",))


def test_pickled_code_checkpoint_is_refused_not_executed(tmp_path):
    if os.path.exists("/tmp/brittle-pwned"):
        os.remove("/tmp/brittle-pwned")
    torch.save({"w": torch.zeros(1), "evil": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="pickled code or objects, refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not os.path.exists("/tmp/brittle-pwned")
    with open(tmp_path / "raw.pkl", "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(ModelError, match="refused|corrupt"):
        load_checkpoint(tmp_path / "raw.pkl")
    assert not os.path.exists("/tmp/brittle-pwned")


def test_corrupt_and_missing_checkpoints(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="does not hold a state dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_state_dict_file_as_model_names_the_fix(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="module:factory"):
        load_model(str(tmp_path / "w.pt"), device="cpu")


def test_unknown_model_spec():
    with pytest.raises(ModelError, match="neither a file, a zoo name"):
        load_model("no_such_model", device="cpu")
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_pkg_xyz:make", device="cpu")


def test_hub_loaders_without_extras_are_clear(monkeypatch):
    for name in ("torchvision", "timm", "robustbench", "robustbench.utils"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelError, match=r"brittle\[vision\]"):
        load_model("torchvision:resnet18", device="cpu")
    with pytest.raises(ModelError, match=r"brittle\[timm\]"):
        load_model("timm:resnet18", device="cpu")
    with pytest.raises(ModelError, match=r"brittle\[robustbench\]"):
        load_model("robustbench:Carmon2019Unlabeled", device="cpu")


def test_robustbench_loader_uses_local_cache(monkeypatch, tmp_path):
    """The RobustBench route is exercised with a fake robustbench module that reads a local file."""
    import types

    net = _net().eval()
    torch.save(net.state_dict(), tmp_path / "Toy.pt")
    calls = {}

    def fake_load_model(model_name, model_dir, dataset, threat_model):
        calls.update(model_name=model_name, model_dir=model_dir, dataset=dataset, threat_model=threat_model)
        m = _net()
        m.load_state_dict(torch.load(tmp_path / f"{model_name}.pt", weights_only=True))
        return m

    utils = types.ModuleType("robustbench.utils")
    utils.load_model = fake_load_model
    monkeypatch.setitem(sys.modules, "robustbench", types.ModuleType("robustbench"))
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    monkeypatch.setenv("BRITTLE_ROBUSTBENCH_DIR", str(tmp_path))
    model = load_model("robustbench:Toy:cifar10:L2", device="cpu")
    x = torch.rand(2, 6)
    assert torch.allclose(model(x), net(x))
    assert calls == {"model_name": "Toy", "model_dir": str(tmp_path), "dataset": "cifar10", "threat_model": "L2"}
    with pytest.raises(ModelError, match="could not load 'Missing'"):
        load_model("robustbench:Missing", device="cpu")


def test_logit_margins_match_a_hand_computation():
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    x = torch.tensor([[0.9, 0.1], [0.2, 0.6], [0.5, 0.5]])
    lm = brittle.logit_margins(lin, x, device="cpu")
    # logits: [.9,.1,.5] -> 0.4 (0 vs 2); [.2,.6,.4] -> 0.2 (1 vs 2); [.5,.5,.5] -> 0 (tie)
    assert lm.margin.tolist() == pytest.approx([0.4, 0.2, 0.0], abs=1e-6)
    assert lm.pred[:2].tolist() == [0, 1] and lm.runner_up[:2].tolist() == [2, 2]


def test_torch_export_archive(tmp_path):
    net, x = _net().eval(), torch.rand(3, 6)
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "m.pt2"))
    loaded = load_model(str(tmp_path / "m.pt2"), device="cpu", trust=True)
    assert torch.allclose(loaded(x), net(x))
    (tmp_path / "bad.pt2").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a loadable torch.export archive"):
        load_model(str(tmp_path / "bad.pt2"), device="cpu", trust=True)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it creates the marker file


def test_a_torch_export_archive_loads_only_when_trusted(tmp_path):
    """torch.export.load unpickles parts of an archive (a legacy weights file, with weights_only=False as its
    fallback): an archive with a pickled payload ran it as it loaded, before brittle's refusal."""
    import zipfile

    net, x = _net().eval(), torch.rand(3, 6)
    good = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(good))
    marker = tmp_path / "MARKER"
    blob = io.BytesIO()
    torch.save({"w": _Payload(str(marker))}, blob)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as out:
        names = src.namelist()
        for name in names:
            out.writestr(name, src.read(name))
        weights = next(n for n in names if "/weights/" in n).rsplit("/", 1)[0]
        out.writestr(f"{weights}/model.pt", blob.getvalue())
    for path in (good, evil):
        with pytest.raises(ModelError, match=r"torch.export archive.*unpickles.*Fix: if you made the file or "
                                             r"trust its source, pass trust=True \(CLI: --trust-model\)"):
            load_model(str(path), device="cpu")
    assert not marker.exists()


def test_the_cli_loads_a_torch_export_archive_only_with_trust_model(tmp_path, capsys):
    from brittle.cli import main

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    path = tmp_path / "mnist.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 28, 28),), dynamic_shapes=({0: batch},)), str(path))
    args = ["--quiet", "margins", "-m", str(path), "--limit", "4", "--strength", "fast"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unpickles" in err and "--trust-model" in err and "Traceback" not in err and not (tmp_path / "a").exists()
    assert main([*args, "--trust-model", "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "margins.parquet").exists()
    # an archive exported for one batch size: named, with the fix (it was "an unexpected AssertionError")
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 28, 28),)), str(path))
    assert main([*args, "--trust-model", "-o", str(tmp_path / "c")]) == 2
    assert "graph takes other input shapes" in capsys.readouterr().err


def _fake_hub(tmp_path, kind: str):
    """A stand-in for torchvision.models / timm that builds a small real network, and records the calls."""
    import types

    calls = []

    def build(**kwargs):
        calls.append(kwargs)
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))

    if kind == "torchvision":
        def get_model_builder(name):
            if name != "tiny":
                raise ValueError(f"Unknown model {name}")
            return build
        module = types.SimpleNamespace(models=types.SimpleNamespace(get_model_builder=get_model_builder))
    else:
        def create_model(name, pretrained):
            return build(name=name, pretrained=pretrained)
        module = types.SimpleNamespace(create_model=create_model)
    return module, calls


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_hub_loaders_build_and_load_local_weights(monkeypatch, tmp_path, kind):
    """torchvision:/timm: names build the library's model and load a local state dict (weights_only)."""
    module, calls = _fake_hub(tmp_path, kind)
    monkeypatch.setitem(sys.modules, kind, module)
    torch.manual_seed(1)
    trained = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model = load_model(f"{kind}:tiny", weights=tmp_path / "w.pt", device="cpu")
    x = torch.rand(4, 1, 3, 4)
    assert torch.equal(model(x), trained(x))  # the local weights, not the builder's initialisation
    assert not model.training
    assert calls[-1] == ({"weights": None} if kind == "torchvision" else {"name": "tiny", "pretrained": False})
    load_model(f"{kind}:tiny", device="cpu")  # without weights: the library's pretrained weights are asked for
    assert calls[-1] == ({"weights": "DEFAULT"} if kind == "torchvision" else {"name": "tiny", "pretrained": True})
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="bad.pt"):
        load_model(f"{kind}:tiny", weights=tmp_path / "bad.pt", device="cpu")
    if kind == "torchvision":
        with pytest.raises(ModelError, match="no model 'nope'"):
            load_model("torchvision:nope", device="cpu")


@pytest.mark.parametrize("spec", ["standard", "zoo:standard"])
def test_zoo_model_with_weights_loads_them(tmp_path, spec):
    """--weights with a zoo name: the state dict goes into the zoo architecture (a fine-tuned model.pt), strictly;
    a missing file is refused before the model is built."""
    from brittle.models import zoo

    source = zoo.load("standard")
    torch.manual_seed(3)
    tuned = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    torch.save(tuned, tmp_path / "tuned.pt")
    by_hand = zoo.load("standard")
    by_hand.load_state_dict(tuned)
    model = load_model(spec, tmp_path / "tuned.pt", device="cpu")
    x = brittle.load_mnist().x[:8]
    with torch.no_grad():
        assert torch.equal(model(x), by_hand.eval()(x))
        assert not torch.equal(model(x), source(x))  # not the shipped weights
    assert model_fingerprint(model) != model_fingerprint(source)
    with pytest.raises(ModelError, match=r"checkpoint .*no-such\.pt does not exist"):
        load_model(spec, tmp_path / "no-such.pt", device="cpu")
    torch.save({k: v for k, v in tuned.items() if not k.endswith("bias")}, tmp_path / "partial.pt")
    with pytest.raises(ModelError, match=r"weights in .*partial\.pt do not fit the model: .*Missing key"):
        load_model(spec, tmp_path / "partial.pt", device="cpu")
    other = mlp(784, (8,), 10).state_dict()
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="do not fit the model"):
        load_model(spec, tmp_path / "other.pt", device="cpu")


def test_robustbench_model_with_weights_loads_them(monkeypatch, tmp_path):
    import types

    utils = types.ModuleType("robustbench.utils")
    utils.load_model = lambda model_name, model_dir, dataset, threat_model: _net()
    monkeypatch.setitem(sys.modules, "robustbench", types.ModuleType("robustbench"))
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    torch.manual_seed(5)
    tuned = mlp(6, (5,), 3)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    model = load_model("robustbench:Toy", tmp_path / "tuned.pt", device="cpu")
    x = torch.rand(3, 6)
    assert torch.equal(model(x), tuned.eval()(x)) and not torch.equal(model(x), _net()(x))
    with pytest.raises(ModelError, match="does not exist"):
        load_model("robustbench:Toy", tmp_path / "missing.pt", device="cpu")


def test_cli_zoo_model_with_missing_weights_is_refused_before_anything(tmp_path, capsys):
    from brittle.cli import main

    out = tmp_path / "out"
    code = main(["--quiet", "margins", "-m", "standard", "--weights", str(tmp_path / "no-such.pt"), "--limit", "5",
                 "-o", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: checkpoint ") and "no-such.pt does not exist. Fix:" in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_the_fingerprint_of_a_class_without_source_is_the_same_in_every_process():
    """A class defined where Python keeps no source (a notebook cell, ``python -``, exec) is hashed by its
    bytecode; a comprehension in its forward must not bring a memory address into the hash (a notebook run
    could then never resume after a restart)."""
    import subprocess

    program = textwrap.dedent("""
        import torch
        from torch import nn
        from brittle.models.loading import model_fingerprint

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)

            def forward(self, x):
                return self.fc(torch.cat([p for p in x.split(2, dim=1)], 1))

        torch.manual_seed(0)
        print(model_fingerprint(Net()))
    """)
    prints = {subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True,
                             check=True).stdout.strip() for _ in range(2)}
    assert len(prints) == 1 and len(next(iter(prints))) == 64


def test_a_zoo_name_is_never_a_path(tmp_path):
    """zoo:NAME joined NAME into the zoo's folders: zoo:../../x loaded a card and weights from anywhere."""
    from brittle.models import zoo

    cards = zoo._folder("cards")
    (tmp_path / "x.json").write_text(json.dumps(zoo.card("standard")))
    torch.save(zoo.load("standard").state_dict(), tmp_path / "x.pt")
    outside = os.path.relpath(tmp_path / "x", cards)
    assert (cards / f"{outside}.json").exists()  # the traversal reaches the planted card
    for name in (outside, ".x", "a\\b"):
        with pytest.raises(ModelError, match=r"no zoo model named .*Fix: use one of: .*standard"):
            load_model(f"zoo:{name}", device="cpu")


class _Scaled64(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.fc, self.scale = nn.Linear(4, 3), scale

    def forward(self, x):
        return self.fc(x.flatten(1)).double() * self.scale


def test_logits_beyond_float32s_range_are_refused_not_turned_into_inf_margins():
    """float64 logits past float32's range became inf/NaN margins in silence (brittle computes in float32)."""
    x = torch.rand(5, 4)
    for scale in (1e40, 1e300):
        with pytest.raises(ModelError, match=r"logits beyond ±1e38 \(float32's range"):
            brittle.logit_margins(_Scaled64(scale).eval(), x, device="cpu")
    margins = brittle.logit_margins(_Scaled64(1e30).eval(), x, device="cpu").margin
    assert np.isfinite(margins).all() and (margins > 0).all()
