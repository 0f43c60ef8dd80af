"""Teach a model a domain-conditioned KGW watermark by LoRA distillation, as a resumable training run.

The teacher is the base model itself (LoRA switched off). On text of the chosen domain the target
next-token distribution is the teacher's with the KGW bias added (``softmax(logits + δ·green(prev))``); on
other text it is the teacher's plain distribution. The student (LoRA adapters via ``peft``) minimises the KL
divergence to these targets, so after training it watermarks its own answers in the domain without any
logits processor, and stays plain elsewhere — the fingerprint of Gloaguen et al. (2025), learned here by logit
distillation (Gu et al. 2024) rather than from sampled teacher text.

A run lives in ``out_dir``: ``checkpoint/`` holds ``adapter.safetensors`` (LoRA weights), ``optimizer.pt``
(tensors and numbers only, read with ``weights_only=True``) and ``state.json`` (step, losses, settings
fingerprint), replaced atomically every ``checkpoint_every`` steps. Batches are a function of (seed, step), so a
run killed at any point and started again resumes from the last checkpoint and ends with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.randomness import seeded
from ..errors import InputError, StoreError
from ._deps import require
from .data import chunk_texts
from .watermark import GreenLists, KGWConfig


@dataclass
class DistillConfig:
    """Settings of a watermark distillation run (everything that defines the result)."""

    watermark: KGWConfig = field(default_factory=KGWConfig)
    steps: int = 200
    batch_size: int = 4
    seq_len: int = 64
    lr: float = 1e-3
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "up_proj", "down_proj")
    checkpoint_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "lora_r", "lora_alpha", "checkpoint_every"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise InputError(f"{name}={v!r} must be a positive integer", f"pass e.g. {name}=8")
        if self.seq_len < 2:
            raise InputError(f"seq_len={self.seq_len} is too short", "pass seq_len >= 2")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise InputError(f"lr={self.lr!r} must lie in (0, 1)", "pass e.g. lr=1e-3")
        self.target_modules = tuple(self.target_modules)

    def fingerprint(self, extra: str = "") -> str:
        """Identity of the run: every setting except ``steps`` and ``checkpoint_every`` (a run may be extended)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("steps", "checkpoint_every")}
        blob = json.dumps({**d, "watermark": asdict(self.watermark)}, sort_keys=True, default=str)
        return hashlib.sha256((blob + extra).encode()).hexdigest()[:16]


@dataclass
class DistillResult:
    """Where a run stands: steps done, per-step losses, whether it resumed, and the checkpoint folder."""

    step: int
    losses: list[float]
    resumed_from: int
    out_dir: Path
    seconds: float


class WatermarkDistillation:
    """LoRA distillation of a domain-conditioned KGW watermark into ``lm`` (a ``LanguageModel``), resumable."""

    def __init__(self, lm: Any, config: DistillConfig, domain_texts: Sequence[str], other_texts: Sequence[str] = (),
                 out_dir: str | os.PathLike = "runs/distill", *, overwrite: bool = False):
        if not isinstance(config, DistillConfig):
            raise InputError("config must be a DistillConfig", "build one with DistillConfig(...)")
        if isinstance(domain_texts, str) or not domain_texts:
            raise InputError("no domain texts to carry the watermark", "pass a list of texts of the target domain")
        if isinstance(other_texts, str):
            raise InputError("other_texts must be a list of texts, not one string", "wrap it in a list")
        self.lm, self.config, self.out_dir = lm, config, Path(out_dir)
        tok = lm.tokenizer
        self.domain = chunk_texts(tok, domain_texts, config.seq_len)
        self.other = chunk_texts(tok, other_texts, config.seq_len) if other_texts else None
        if self.domain.shape[0] < 1:
            raise InputError(f"the domain texts give no chunk of {config.seq_len} tokens", "pass more text or lower seq_len")
        data_hash = hashlib.sha256(self.domain.numpy().tobytes()
                                   + (self.other.numpy().tobytes() if self.other is not None else b"")).hexdigest()
        self.run_id = config.fingerprint(data_hash + lm.name)
        ckpt = self._checkpoint_dir()
        if overwrite and self.out_dir.exists():  # the checkpoint and a half-renamed one (killed between renames)
            for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
                shutil.rmtree(self.out_dir / name, ignore_errors=True)
        elif ckpt is not None:
            prev = self._read_state(ckpt).get("run_id")
            if prev != self.run_id:
                raise StoreError(f"'{self.out_dir}' holds a different distillation run",
                                 "pass another out_dir, or overwrite=True (--overwrite) to start again")
        self.green = GreenLists(int(lm.model.config.vocab_size), config.watermark.gamma,
                                config.watermark.hashing_key)
        self._model = None

    # ----------------------------------------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        """The peft model (base weights frozen, LoRA adapters trainable)."""
        if self._model is None:
            peft = require("peft")
            c = self.config
            names = {n.split(".")[-1] for n, _ in self.lm.model.named_modules()}
            targets = [t for t in c.target_modules if t in names]
            if not targets:
                raise InputError(f"none of target_modules {list(c.target_modules)} exist in the model",
                                 f"choose among {sorted(n for n in names if n.endswith('proj'))}")
            with seeded(c.seed, next(self.lm.model.parameters()).device):  # LoRA weights start on its device
                lcfg = peft.LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=0.0,
                                       target_modules=targets, task_type="CAUSAL_LM")
                self._model = peft.get_peft_model(self.lm.model, lcfg)
        return self._model

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    # ----------------------------------------------------------------------------------------------- data
    def _batch(self, step: int, data: torch.Tensor, salt: int) -> torch.Tensor:
        rng = np.random.default_rng([self.config.seed, step, salt])
        idx = rng.choice(data.shape[0], min(self.config.batch_size, data.shape[0]), replace=False)
        return data[idx].to(next(self.lm.model.parameters()).device)

    def _green_bias(self, x: torch.Tensor) -> torch.Tensor:
        masks = torch.stack([self.green.mask(int(t)) for t in x.reshape(-1).tolist()])
        v = self.green.vocab_size
        return (self.config.watermark.delta * masks.float()).reshape(*x.shape, v).to(x.device)

    def _loss(self, x: torch.Tensor, watermark: bool) -> torch.Tensor:
        model = self.model
        with torch.no_grad(), model.disable_adapter():
            teacher = model(input_ids=x, use_cache=False).logits.float()
        v = self.green.vocab_size
        teacher = teacher[..., :v]
        if watermark:
            teacher = teacher + self._green_bias(x)
        student = model(input_ids=x, use_cache=False).logits.float()[..., :v]
        return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                        reduction="batchmean") / x.shape[1]

    # ----------------------------------------------------------------------------------------------- checkpoints
    def _save(self, step: int, losses: list[float], opt: torch.optim.Optimizer) -> None:
        from safetensors.torch import save_file

        final = self.out_dir / "checkpoint"
        tmp = self.out_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({n: p.detach().contiguous().clone() for n, p in self._trainable().items()},
                  str(tmp / "adapter.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"run_id": self.run_id, "step": step, "losses": losses,
                                                    "config": asdict(self.config)}, default=str))
        old = self.out_dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def _checkpoint_dir(self) -> Path | None:
        """The folder of the last checkpoint: ``checkpoint/``, or ``checkpoint.old/`` when a run was killed
        between `_save`'s two renames; None when there is none."""
        for name in ("checkpoint", "checkpoint.old"):
            if (self.out_dir / name / "state.json").is_file():
                return self.out_dir / name
        return None

    @staticmethod
    def _read_state(folder: Path) -> dict[str, Any]:
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise StoreError(f"the checkpoint's state.json in '{folder}' is damaged ({type(exc).__name__})",
                             "start again with overwrite=True (--overwrite)") from None
        if not isinstance(state, dict):
            raise StoreError(f"the checkpoint's state.json in '{folder}' is damaged (not an object)",
                             "start again with overwrite=True (--overwrite)")
        return state

    def _load(self, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
        from safetensors.torch import load_file

        final = self._checkpoint_dir()
        if final is None:
            return 0, []
        state = self._read_state(final)
        if state.get("run_id") != self.run_id:  # never another run's weights, whichever folder they are in
            raise StoreError(f"'{self.out_dir}' holds a different distillation run",
                             "pass another out_dir, or overwrite=True (--overwrite) to start again")
        try:
            weights = load_file(str(final / "adapter.safetensors"))
            optimizer = torch.load(final / "optimizer.pt", weights_only=True)
            step, losses = int(state["step"]), list(state["losses"])
        except Exception as exc:  # noqa: BLE001 - safetensors, torch and json raise many types for a damaged file
            raise StoreError(f"the checkpoint in '{final}' is damaged ({type(exc).__name__})",
                             "start again with overwrite=True (--overwrite)") from None
        params = self._trainable()
        if set(weights) != set(params):
            raise StoreError(f"checkpoint in '{final}' does not match the adapters", "start again with overwrite=True")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights[n])
        opt.load_state_dict(optimizer)
        return step, losses

    # ----------------------------------------------------------------------------------------------- run
    def run(self, *, stop_after: int | None = None, log: Any = None) -> DistillResult:
        """Train up to ``config.steps`` (or ``stop_after`` more steps), resuming from the last checkpoint."""
        t0 = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        model = self.model
        model.train()
        opt = torch.optim.AdamW(list(self._trainable().values()), lr=self.config.lr)
        step, losses = self._load(opt)
        start = step
        end = self.config.steps if stop_after is None else min(self.config.steps, step + stop_after)
        while step < end:
            opt.zero_grad(set_to_none=True)
            loss = self._loss(self._batch(step, self.domain, 0), watermark=True)
            if self.other is not None:
                loss = loss + self._loss(self._batch(step, self.other, 1), watermark=False)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            if log is not None:
                log(step, losses[-1])
            if step % self.config.checkpoint_every == 0 or step == end:
                self._save(step, losses, opt)
        model.eval()
        return DistillResult(step=step, losses=losses, resumed_from=start, out_dir=self.out_dir,
                             seconds=time.perf_counter() - t0)
