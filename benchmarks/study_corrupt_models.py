"""How often a damaged XGBoost or LightGBM model file crashes the process, with brittle's checks and without.

Usage::

    python benchmarks/study_corrupt_models.py --format ubj --n 300 --out benchmarks/results/corrupt_models_ubj.json
    python benchmarks/study_corrupt_models.py --format json --n 300 --unchecked   # XGBoost alone
    python benchmarks/study_corrupt_models.py --format txt --n 300                # LightGBM's text format

A small XGBoost classifier (8 trees of depth 3, scikit-learn's breast-cancer data; LightGBM: 8 trees of 8
leaves) is saved in the format; each trial changes one byte (a random byte for ``.ubj``; a digit or number
character for ``.json`` and ``.txt``, so the text mostly stays parseable) and, in a child process, loads the file
with `brittle.explain.load_model` (``--unchecked``: the library's own loader alone) and predicts with it,
plainly, with TreeSHAP contributions and (XGBoost) with interactions. Outcomes per trial: refused (one brittle error line), loaded and predicted, raised (a Python
exception from XGBoost), or crashed (the child died on a signal, e.g. a segmentation fault) and where.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys
try:  # a damaged length can make XGBoost allocate without end: cap the child's memory
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except (ImportError, ValueError, OSError):
    pass
import numpy as np
import xgboost as xgb
from brittle.errors import BrittleError
path, data, unchecked = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
lgb = path.endswith(".txt")
try:
    if unchecked and lgb:
        import lightgbm
        booster = lightgbm.Booster(model_file=path)
    elif unchecked:
        booster = xgb.Booster()
        booster.load_model(path)
    else:
        from brittle.explain import load_model
        booster = load_model(path)
except BrittleError:
    print("refused"); sys.exit(0)
except Exception:
    print("raised"); sys.exit(0)
print("loaded", flush=True)
x = np.load(data) if lgb else xgb.DMatrix(np.load(data))
try:
    booster.predict(x)
    print("predicted", flush=True)
    if lgb:
        booster.predict(x, pred_contrib=True)
    else:
        booster.predict(x, pred_contribs=True)
        booster.predict(x, pred_interactions=True)
    print("explained", flush=True)
except Exception:
    print("raised")
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("ubj", "json", "txt"), default="ubj", help="txt: LightGBM's text model")
    p.add_argument("--n", type=int, default=300, help="trials (one changed byte each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unchecked", action="store_true", help="load with XGBoost alone, without brittle's checks")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import numpy as np
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    outcomes: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / f"model.{args.format}"
        if args.format == "txt":
            import lightgbm

            lightgbm.train({"objective": "binary", "num_leaves": 8, "verbose": -1}, lightgbm.Dataset(X, y),
                           8).save_model(str(good))
        else:
            xgb.XGBClassifier(n_estimators=8, max_depth=3, random_state=0).fit(X, y).get_booster().save_model(good)
        data = Path(tmp) / "x.npy"
        np.save(data, X[:50])
        raw = good.read_bytes()
        rng = random.Random(args.seed)
        bad = Path(tmp) / f"bad.{args.format}"
        for _ in range(args.n):
            damaged = bytearray(raw)
            pos = rng.randrange(len(damaged))
            damaged[pos] = rng.randrange(256) if args.format == "ubj" else ord(rng.choice("0123456789-.e,"))
            bad.write_bytes(bytes(damaged))
            try:
                proc = subprocess.run([sys.executable, "-c", CHILD, str(bad), str(data), "1" if args.unchecked else "0"],
                                      capture_output=True, text=True, timeout=60)
                steps = proc.stdout.split()
                if proc.returncode == 0:
                    outcome = steps[-1] if steps else "no output"
                else:
                    outcome = f"crashed after '{steps[-1]}'" if steps else "crashed loading"
            except subprocess.TimeoutExpired:
                outcome = "timed out"
            outcomes[outcome] += 1
    crashed = sum(v for k, v in outcomes.items() if k.startswith(("crashed", "timed out")))
    result = {"study": "corrupt_tree_models", "format": args.format, "trials": args.n, "seed": args.seed,
              "checked_by_brittle": not args.unchecked, "xgboost": xgb.__version__, "outcomes": dict(outcomes),
              "crashed_or_hung": crashed}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
