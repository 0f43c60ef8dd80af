"""Pruning and quantization: hand cases, requested sparsity, error ordering against the baselines, model level."""

import pytest
import torch

from brittle.errors import BrittleError
from brittle.llm.compression import (GPTQ, RTN, SparseGPT, Wanda, compress_model, gptq_quantize, layer_error,
                                     magnitude_prune, make_compressor, rtn_quantize, sparsegpt_prune,
                                     wanda_prune)


def _layer(seed=0, out=24, inp=64, n=512):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, generator=g)
    # correlated inputs with uneven scales, as in real activations
    X = torch.randn(n, inp, generator=g) @ torch.randn(inp, inp, generator=g) * 0.3
    X[:, :4] *= 8.0
    return W, X.T @ X / n


def test_magnitude_and_wanda_hand_case():
    W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 0.1, -0.2, 0.3]])
    assert torch.equal(magnitude_prune(W, 0.5), torch.tensor([[0.0, 0.0, 3.0, -4.0], [0.5, 0.0, 0.0, 0.3]]))
    H = torch.diag(torch.tensor([100.0, 1.0, 1.0, 0.01]))  # ‖X_j‖ = 10, 1, 1, 0.1
    # scores row 0: 10, 2, 3, 0.4 -> keep cols 0, 2; row 1: 5, 0.1, 0.2, 0.03 -> keep cols 0, 2
    assert torch.equal(wanda_prune(W, H, 0.5), torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.5, 0.0, -0.2, 0.0]]))


def test_rtn_hand_case():
    W = torch.tensor([[0.0, 1.0, 2.0, 3.0], [-1.0, 0.2, 0.6, 2.0]])
    # 2 bits: row 0 range [0, 3] -> scale 1, exact; row 1 range [-1, 2] -> scale 1, zero 1, levels -1, 0, 1, 2
    out = rtn_quantize(W, bits=2, group_size=None)
    assert torch.allclose(out[0], W[0])
    assert torch.allclose(out[1], torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    # groups of 2 columns use their own ranges
    assert torch.allclose(rtn_quantize(torch.tensor([[0.0, 1.0, 10.0, 20.0]]), bits=1, group_size=2),
                          torch.tensor([[0.0, 1.0, 0.0, 20.0]]))


def test_gptq_equals_rtn_and_sparsegpt_equals_wanda_when_inputs_uncorrelated():
    """With a diagonal H there is nothing to compensate: GPTQ = RTN; SparseGPT's mask = Wanda's per block."""
    W, _ = _layer(1, out=8, inp=16)
    H = torch.eye(16)
    assert torch.allclose(gptq_quantize(W, H, bits=3, group_size=8), rtn_quantize(W, bits=3, group_size=8),
                          atol=1e-6)
    Hd = torch.diag(torch.linspace(0.5, 3.0, 16))
    sg = sparsegpt_prune(W, Hd, 0.5, blocksize=16, percdamp=0.0)
    # diagonal H: SparseGPT keeps unpruned weights unchanged and prunes the lowest W²·H_jj over the block
    kept = sg != 0
    assert torch.allclose(sg[kept], W[kept])
    score = (W**2 * torch.diagonal(Hd)).flatten()
    assert set(torch.nonzero(~kept.flatten()).flatten().tolist()) == set(torch.topk(score, 64, largest=False)
                                                                          .indices.tolist())


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.7])
def test_pruners_reach_requested_sparsity(sparsity):
    W, H = _layer(2)
    for fn in (lambda: wanda_prune(W, H, sparsity), lambda: sparsegpt_prune(W, H, sparsity, blocksize=32)):
        out = fn()
        assert abs((out == 0).float().mean().item() - sparsity) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_error_at_most_magnitude_and_wanda(seed):
    W, H = _layer(seed)
    e_sg = layer_error(W, sparsegpt_prune(W, H, 0.5, blocksize=32), H)
    assert e_sg <= layer_error(W, magnitude_prune(W, 0.5), H)
    assert e_sg <= layer_error(W, wanda_prune(W, H, 0.5), H)


@pytest.mark.parametrize("seed,bits,gs", [(0, 4, 16), (1, 3, None), (2, 2, 32)])
def test_gptq_error_at_most_rtn(seed, bits, gs):
    W, H = _layer(seed)
    assert layer_error(W, gptq_quantize(W, H, bits, gs, blocksize=32), H) <= layer_error(W, rtn_quantize(W, bits, gs), H)


def test_gptq_output_is_on_the_grid():
    W, H = _layer(3, out=4, inp=16)
    q = gptq_quantize(W, H, bits=2, group_size=None)
    assert all(len(torch.unique(row)) <= 4 for row in q)


def test_compress_model_tiny(tiny):
    import copy

    lm = copy.deepcopy(tiny)
    calib = torch.randint(3, lm.vocab_size, (6, 24), generator=torch.Generator().manual_seed(0))
    for method in (Wanda(0.5), SparseGPT(0.5)):
        m = copy.deepcopy(lm.model)
        rep = compress_model(m, calib, method, batch_size=4)
        assert abs(rep.sparsity - 0.5) < 0.01 and len(rep.layers) == 2 * 7
    m = copy.deepcopy(lm.model)
    rep_g = compress_model(m, calib, GPTQ(bits=3, group_size=16))
    m = copy.deepcopy(lm.model)
    rep_r = compress_model(m, calib, RTN(bits=3, group_size=16))
    # first layer sees identical inputs under both: GPTQ's error is not larger there
    first = lambda rep: sum(r["error"] for r in rep.layers if r["layer"] == 0)
    assert first(rep_g) <= first(rep_r) * (1 + 1e-9)
    logits = m(input_ids=calib[:1]).logits
    assert torch.isfinite(logits).all()


def test_bad_inputs_are_brittle_errors(tiny):
    W, H = _layer(0, out=4, inp=8)
    with pytest.raises(BrittleError):
        wanda_prune(W, H, 1.5)
    with pytest.raises(BrittleError):
        sparsegpt_prune(W, torch.eye(3), 0.5)
    with pytest.raises(BrittleError):
        rtn_quantize(W, bits=0)
    with pytest.raises(BrittleError, match="Fix:"):
        make_compressor("prune-everything")
    with pytest.raises(BrittleError):
        compress_model(tiny.model, torch.zeros(2, 5), Wanda(0.5))
    with pytest.raises(BrittleError):
        compress_model(tiny.model, torch.full((2, 5), 10**6), Wanda(0.5))
    with pytest.raises(BrittleError):
        compress_model(tiny.model, None, GPTQ())
