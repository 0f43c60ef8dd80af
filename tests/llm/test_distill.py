"""Resumable LoRA distillation of a domain-conditioned watermark on a tiny model (kill and resume)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from brittle.errors import BrittleError
from brittle.llm.distill import DistillConfig, WatermarkDistillation
from brittle.llm.watermark import KGWConfig

DOMAIN = ["the patient received a dose of the drug and the study measured cells. " * 3] * 4
OTHER = ["the court ordered the plaintiff to file a motion before the hearing. " * 3] * 4


def _cfg(**kw):
    base = dict(watermark=KGWConfig(gamma=0.25, delta=4.0), steps=6, batch_size=2, seq_len=24, lr=5e-3,
                lora_r=2, checkpoint_every=2, seed=0)
    base.update(kw)
    return DistillConfig(**base)


def _adapters(run):
    return {n: p.detach().clone() for n, p in run._trainable().items()}


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    from brittle.llm.models import tiny_llama

    full = WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, tmp_path / "a")
    res = full.run()
    assert res.step == 6 and len(res.losses) == 6
    part = WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, tmp_path / "b")
    assert part.run(stop_after=3).step == 3
    again = WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, tmp_path / "b")
    res2 = again.run()
    assert res2.resumed_from == 3 and res2.step == 6
    assert res2.losses == pytest.approx(res.losses, rel=1e-5)
    a, b = _adapters(full), _adapters(again)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a finished run can be extended: more steps continue from the checkpoint
    more = WatermarkDistillation(tiny_llama(seed=0), _cfg(steps=7), DOMAIN, OTHER, tmp_path / "b").run()
    assert more.resumed_from == 6 and more.step == 7
    # checkpoint files are weights_only-safe
    torch.load(tmp_path / "b" / "checkpoint" / "optimizer.pt", weights_only=True)


def test_distillation_raises_green_mass_on_domain_text(tmp_path):
    """After training, the student puts more probability on green tokens in the domain, less so elsewhere."""
    from brittle.llm.models import tiny_llama

    cfg = _cfg(steps=30, lr=5e-2, lora_r=8, checkpoint_every=30, target_modules=("q_proj", "v_proj", "lm_head"))
    run = WatermarkDistillation(tiny_llama(seed=0), cfg, DOMAIN, OTHER, tmp_path / "g")

    def green_mass(x):
        with torch.no_grad():
            p = torch.softmax(run.model(input_ids=x).logits.float(), -1)
        return float((p * (run._green_bias(x) > 0)).sum(-1).mean())

    d0, o0 = green_mass(run.domain[:2]), green_mass(run.other[:2])
    res = run.run()
    d1, o1 = green_mass(run.domain[:2]), green_mass(run.other[:2])
    assert res.losses[-1] < res.losses[0]
    assert d1 - d0 > 0.1 and d1 - d0 > o1 - o0


def test_kill_and_resume(tmp_path):
    out = tmp_path / "k"
    code = textwrap.dedent(f"""
        import torch, time
        torch.set_num_threads(1)
        from brittle.llm.models import tiny_llama
        from brittle.llm.distill import DistillConfig, WatermarkDistillation
        from brittle.llm.watermark import KGWConfig
        import tests.llm.test_distill as t
        run = WatermarkDistillation(tiny_llama(seed=0), t._cfg(steps=400, checkpoint_every=2), t.DOMAIN, t.OTHER,
                                    {str(out)!r})
        run.run(log=lambda s, l: time.sleep(0.05))
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=os.getcwd())
    state = out / "checkpoint" / "state.json"
    t0 = time.time()
    while not state.exists() and time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint before the kill"
    from brittle.llm.models import tiny_llama

    resumed = WatermarkDistillation(tiny_llama(seed=0), _cfg(steps=400, checkpoint_every=2), DOMAIN, OTHER, out)
    res = resumed.run(stop_after=2)
    assert res.resumed_from >= 2 and res.step == res.resumed_from + 2


def test_bad_inputs(tmp_path, tiny):
    with pytest.raises(BrittleError):
        DistillConfig(steps=0)
    with pytest.raises(BrittleError):
        DistillConfig(lr=5.0)
    with pytest.raises(BrittleError):
        WatermarkDistillation(tiny, _cfg(), [], OTHER, tmp_path / "x")
    with pytest.raises(BrittleError):
        WatermarkDistillation(tiny, _cfg(), "one string", OTHER, tmp_path / "x")
    from brittle.llm.models import tiny_llama

    WatermarkDistillation(tiny_llama(), _cfg(steps=2), DOMAIN, OTHER, tmp_path / "d").run()
    with pytest.raises(BrittleError, match="different distillation run"):
        WatermarkDistillation(tiny_llama(), _cfg(steps=2, lr=1e-2), DOMAIN, OTHER, tmp_path / "d")
    with pytest.raises(BrittleError, match="target_modules"):
        _ = WatermarkDistillation(tiny_llama(), _cfg(target_modules=("nope",)), DOMAIN, OTHER, tmp_path / "e").model


def test_a_checkpoint_left_between_the_two_renames_belongs_to_its_own_run_only(tmp_path):
    """Killed between `_save`'s renames, only checkpoint.old/ is left: the different-run check read only
    checkpoint/, and overwrite=True removed only checkpoint/, so another run resumed the old run's weights."""
    from brittle.errors import StoreError
    from brittle.llm.models import tiny_llama

    out = tmp_path / "d"
    assert WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, out).run(stop_after=2).step == 2
    os.replace(out / "checkpoint", out / "checkpoint.old")  # the state a kill between the renames leaves
    with pytest.raises(StoreError, match="holds a different distillation run"):
        WatermarkDistillation(tiny_llama(seed=0), _cfg(seed=1), DOMAIN, OTHER, out)
    fresh = WatermarkDistillation(tiny_llama(seed=0), _cfg(seed=1), DOMAIN, OTHER, out, overwrite=True).run()
    assert fresh.resumed_from == 0 and fresh.step == 6
    same = tmp_path / "s"
    WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, same).run(stop_after=2)
    os.replace(same / "checkpoint", same / "checkpoint.old")
    assert WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, same).run().resumed_from == 2


@pytest.mark.parametrize("name, content", [("state.json", b"{"), ("adapter.safetensors", b"\x00" * 10),
                                           ("optimizer.pt", b"")])
def test_a_damaged_checkpoint_file_is_named(tmp_path, name, content):
    """Damaged checkpoint files raised raw JSONDecodeError / SafetensorError / OSError."""
    from brittle.errors import StoreError
    from brittle.llm.models import tiny_llama

    out = tmp_path / "d"
    WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, out).run(stop_after=2)
    (out / "checkpoint" / name).write_bytes(content)
    with pytest.raises(StoreError, match=r"checkpoint.*is damaged.*Fix: start again with overwrite=True"):
        WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, out).run()
    assert WatermarkDistillation(tiny_llama(seed=0), _cfg(), DOMAIN, OTHER, out, overwrite=True).run().resumed_from == 0
