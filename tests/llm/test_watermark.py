"""KGW: equality with transformers' WatermarkDetector / WatermarkLogitsProcessor, false-positive rate, errors."""

import math

import pytest
import torch

from brittle.errors import BrittleError
from brittle.llm.watermark import (KGWConfig, KGWDetector, KGWLogitsProcessor, fingerprint_from_answers,
                                   generate)


@pytest.mark.parametrize("gamma,key,ignore", [(0.25, 15485863, False), (0.5, 42, False), (0.25, 7, True)])
def test_z_scores_equal_transformers_detector(tiny, gamma, key, ignore):
    from transformers import WatermarkDetector, WatermarkingConfig

    cfg = KGWConfig(gamma=gamma, delta=3.0, hashing_key=key, ignore_repeated_ngrams=ignore)
    wm = WatermarkingConfig(greenlist_ratio=gamma, bias=3.0, hashing_key=key, seeding_scheme="lefthash",
                            context_width=1)
    ref = WatermarkDetector(tiny.model.config, "cpu", wm, ignore_repeated_ngrams=ignore)
    mine = KGWDetector(cfg, tiny.vocab_size, bos_token_id=tiny.model.config.bos_token_id)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, tiny.vocab_size, (n,), generator=g) for n in (5, 40, 120)]
    seqs.append(torch.tensor([1] + [7, 8] * 20))  # leading BOS and repeated bigrams
    seqs += [torch.tensor(s) for s in generate(tiny, ["hello there", "a b c"], config=cfg, max_new_tokens=40,
                                               chat=False)]
    for s in seqs:
        out = ref(s[None], return_dict=True)
        d = mine.detect(s)
        assert d.scored == int(out.num_tokens_scored[0])
        assert d.green == int(out.num_green_tokens[0])
        assert math.isclose(d.z, float(out.z_score[0]), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(d.p_value, float(out.p_value[0]), rel_tol=1e-9, abs_tol=1e-15)


def test_logits_processor_equals_transformers(tiny):
    from transformers.generation.logits_process import WatermarkLogitsProcessor

    cfg = KGWConfig(gamma=0.3, delta=1.5, hashing_key=99)
    ref = WatermarkLogitsProcessor(tiny.vocab_size, "cpu", greenlist_ratio=0.3, bias=1.5, hashing_key=99)
    ids = torch.randint(0, tiny.vocab_size, (3, 6), generator=torch.Generator().manual_seed(0))
    scores = torch.randn(3, tiny.vocab_size)
    assert torch.equal(KGWLogitsProcessor(cfg, tiny.vocab_size)(ids, scores), ref(ids, scores))


def test_watermarked_generation_detected_plain_not(tiny):
    cfg = KGWConfig(gamma=0.25, delta=8.0, z_threshold=4.0)
    prompts = ["the quick brown fox", "once upon a time"]
    wm = fingerprint_from_answers(generate(tiny, prompts, config=cfg, max_new_tokens=60, chat=False), cfg,
                                  tiny.vocab_size)
    plain = fingerprint_from_answers(generate(tiny, prompts, config=None, max_new_tokens=60, chat=False), cfg,
                                     tiny.vocab_size)
    assert wm.watermarked and wm.detection.z > 8
    assert not plain.watermarked and plain.detection.z < cfg.z_threshold


def test_generation_is_seeded_and_leaves_the_callers_random_state(tiny):
    prompts = ["the quick brown fox", "once upon a time"]
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    first = generate(tiny, prompts, max_new_tokens=12, chat=False, seed=3)
    assert torch.equal(torch.rand(4), expected)  # as if generate had not run
    assert generate(tiny, prompts, max_new_tokens=12, chat=False, seed=3) == first
    assert generate(tiny, prompts, max_new_tokens=12, chat=False, seed=4) != first


def test_unwatermarked_false_positive_rate():
    """Unwatermarked sequences exceed the threshold at most at the stated rate (binomial slack of 3 sd)."""
    n, vocab = 400, 1000
    g = torch.Generator().manual_seed(3)
    for z_threshold in (2.0, 4.0):
        cfg = KGWConfig(gamma=0.25, z_threshold=z_threshold, min_tokens=16)
        det = KGWDetector(cfg, vocab)
        flagged = sum(det.detect(torch.randint(0, vocab, (100,), generator=g)).watermarked for _ in range(n))
        fpr = cfg.false_positive_rate
        assert flagged / n <= fpr + 3 * math.sqrt(fpr * (1 - fpr) / n) + 1e-12


def test_min_tokens_blocks_short_sequences():
    cfg = KGWConfig(gamma=0.25, z_threshold=1.0, min_tokens=50)
    det = KGWDetector(cfg, 100)
    green = det.green.ids(5)[0].item()
    d = det.detect([5, green])  # one green token: z high, but too short to decide
    assert d.z > 1 and not d.enough_tokens and not d.watermarked


@pytest.mark.parametrize("kwargs", [dict(gamma=0.0), dict(gamma=1.5), dict(delta=-1.0), dict(hashing_key=0),
                                    dict(min_tokens=0), dict(z_threshold=float("inf")),
                                    dict(z_threshold=0.0), dict(z_threshold=-2.0), dict(z_threshold="4")])
def test_bad_settings_are_brittle_errors(kwargs):
    with pytest.raises(BrittleError, match="Fix:"):
        KGWConfig(**kwargs)


def test_bad_tokens_are_brittle_errors():
    det = KGWDetector(KGWConfig(), 100)
    with pytest.raises(BrittleError):
        det.detect(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(BrittleError):
        det.detect(["a", "b"])
    with pytest.raises(BrittleError):
        det.detect([-1, 3])


def test_token_ids_outside_the_vocabulary_are_refused():
    det = KGWDetector(KGWConfig(min_tokens=1), 259)
    with pytest.raises(BrittleError, match=r"^token id 300 is outside the vocabulary of 259 tokens\. Fix: pass token "
                                           r"ids produced by the model's own tokenizer$"):
        det.detect([5, 7, 300, 1000] * 10)
    with pytest.raises(BrittleError, match="token id 259 is outside"):
        det.detect(torch.tensor([3, 259]))
    assert det.detect([3, 258]).scored == 1  # the last id of the vocabulary is fine


def test_numpy_scalar_settings_are_accepted_as_python_numbers():
    import numpy as np

    cfg = KGWConfig(gamma=np.float32(0.25), delta=np.float64(2.0), hashing_key=np.int64(7),
                    z_threshold=np.float32(4.0), min_tokens=np.int32(16))
    assert cfg == KGWConfig(gamma=0.25, delta=2.0, hashing_key=7, z_threshold=4.0, min_tokens=16)
    assert [type(v) for v in (cfg.gamma, cfg.delta, cfg.hashing_key, cfg.z_threshold, cfg.min_tokens)] == [
        float, float, int, float, int]
    toks = torch.randint(0, 500, (80,), generator=torch.Generator().manual_seed(0))
    assert KGWDetector(cfg, 500).detect(toks) == KGWDetector(KGWConfig(gamma=0.25, hashing_key=7), 500).detect(toks)
    # a key large enough that key * token overflows int64: the seed is Python's exact product, as with an int key
    big = KGWConfig(hashing_key=np.int64(2**62 + 1))
    assert torch.equal(KGWDetector(big, 500).green.ids(499), KGWDetector(KGWConfig(hashing_key=2**62 + 1), 500)
                       .green.ids(499))


@pytest.mark.parametrize("kwargs", [dict(gamma=True), dict(delta=True), dict(hashing_key=True), dict(min_tokens=True),
                                    dict(z_threshold=True), dict(hashing_key=7.0), dict(min_tokens=16.0)])
def test_bools_and_floats_for_integers_are_refused(kwargs):
    with pytest.raises(BrittleError, match="Fix:"):
        KGWConfig(**kwargs)


def test_an_empty_prompt_is_refused_before_generating(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny.model, "generate", lambda *a, **k: calls.append(1))
    with pytest.raises(BrittleError, match=r"^prompt 2 is empty\. Fix: pass a non-empty prompt$"):
        generate(tiny, ["hello", ""], max_new_tokens=4)
    with pytest.raises(BrittleError, match="prompt 1 is empty"):
        generate(tiny, "", max_new_tokens=4)
    with pytest.raises(BrittleError, match="prompt 1 is a NoneType, not a string"):
        generate(tiny, [None], max_new_tokens=4)
    assert not calls
