"""GROOD: gradient-aware OOD detection with class prototypes and a synthetic OOD prototype.

ElAraby, Sahoo, Pequignot, Novello, Paull, *GROOD: Gradient-Aware Out-of-Distribution Detection*, TMLR 2025
(arXiv 2312.14427). brittle's implementation is written from the method's description; every choice the
abstract leaves open is listed here.

**Prototypes.** ``p_1 … p_C`` are the class means of the penultimate features ``h`` of the ID fit inputs
(labels = ``target``, or the predicted classes when none are given; a class without fit input gets the mean of
all features). The **OOD prototype** ``p_ood`` comes from a *targeted mix-up at an early layer*
(`fit_ood_prototype`, needs the model at fit time only): the class means of an early layer's output are mixed
pairwise, ``m_ij = λ·e_i + (1 − λ)·e_j`` for every unordered pair of classes ``i < j`` (``λ = 0.5``: the
mix-up is aimed at the boundary between two classes — an input that is neither), each ``m_ij`` replaces that
layer's output in a forward pass (a forward hook), and ``p_ood`` is the mean of the resulting penultimate
features (class means from at most ``max_train`` fit inputs). ``early_layer = None`` picks the first ``Conv2d``/``Linear`` of the model. With skip connections
around the early layer the skip path carries the placeholder batch (the first fit inputs); for feed-forward
chains (the zoo) the mix is exact. Without a model (`fit` alone) the mix-up is done on the penultimate class
prototypes themselves — with ``λ = 0.5`` that is the mean of the class prototypes — a documented fallback.

**Loss and gradient (closed form).** The nearest-class-prototype (NCP) logits over the ``C + 1`` prototypes
are ``z_k(h) = −‖h − p_k‖₂ / τ`` (Euclidean, not squared: squared distances of unnormalised features saturate
the softmax; ``τ = temperature``), ``s = softmax(z)``, and the loss is the cross-entropy at the nearest *ID*
prototype ``y = argmin_k ‖h − p_k‖``. Its gradient with respect to the OOD prototype is

    g(h) = ∂L/∂p_ood = s_ood(h) · (h − p_ood) / (τ ‖h − p_ood‖)

— independent of which ID label is used (only ``z_ood`` depends on ``p_ood``): a vector of norm
``s_ood/τ`` pointing from the OOD prototype to the input. `ncp_gradient` computes it; the tests check it
against autograd.

**Score.** ``score(x) = ‖g(h(x)) − g_(k)‖₂``, the distance to the ``k``-th nearest training gradient (``k = 1``,
plain Euclidean distance in gradient space; ``max_train`` fit inputs, seeded subsample, are kept). Higher =
more OOD. Scoring needs only the penultimate features (``needs_model = False``); the model is used at fit time
by `fit_model` for the early-layer mix-up.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models.features import Features, capture_many, resolve_layer
from ..models.loading import keeps_model_mode
from ..scores.base import register
from ._base import OODDetector, as_labels, check_positive, decode_array, encode_array, layer_matrix, t64


def ncp_logits(h: torch.Tensor, prototypes: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NCP logits ``−‖h − p_k‖ / τ`` of a batch ``(N, D)`` against prototypes ``(K, D)``."""
    return -torch.cdist(h, prototypes) / temperature


def ncp_gradient(h: torch.Tensor, class_prototypes: torch.Tensor, ood_prototype: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """``∂L/∂p_ood`` for every row of ``h`` (closed form; module docstring), shape ``(N, D)``."""
    protos = torch.cat([class_prototypes, ood_prototype[None, :]], dim=0)
    s_ood = torch.softmax(ncp_logits(h, protos, temperature), dim=1)[:, -1]
    diff = h - ood_prototype[None, :]
    norm = diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return s_ood[:, None] * diff / (temperature * norm)


def first_parametric_layer(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return name
    raise InputError("the model has no Conv/Linear layer to mix at", "pass early_layer= a layer name")


@register
class GROOD(OODDetector):
    """Nearest-neighbour distance in the space of NCP-loss gradients w.r.t. a synthetic OOD prototype."""

    name = "grood"
    requires_fit = True
    uses_layer = True
    min_fit_classes = 2   # the OOD prototype mixes the means of two classes
    paper = "ElAraby et al., TMLR 2025"

    def __init__(self, layer: str | None = None, early_layer: str | None = None, lam: float = 0.5,
                 temperature: float = 1.0, k: int = 1, max_train: int = 5000, seed: int = 0) -> None:
        super().__init__(layer)
        if early_layer is not None and (not isinstance(early_layer, str) or not early_layer):
            raise InputError(f"early_layer must be a layer name, got {early_layer!r}", "pass a name from layer_names(model)")
        lam_ok = isinstance(lam, (int, float)) and not isinstance(lam, bool) and 0.0 <= float(lam) <= 1.0
        if not lam_ok:
            raise InputError(f"lam must be a number in [0, 1], got {lam!r}", "pass e.g. lam=0.5")
        self.early_layer = early_layer
        self.lam = float(lam)
        self.temperature = check_positive(temperature, "temperature")
        self.k = check_positive(k, "k", integer=True)
        self.max_train = check_positive(max_train, "max_train", integer=True)
        self.seed = int(seed)
        self.prototypes_: np.ndarray | None = None
        self.ood_prototype_: np.ndarray | None = None
        self.ood_source_: str | None = None
        self.bank_: np.ndarray | None = None

    # --- fitting ----------------------------------------------------------------------------------
    def _fit(self, features: Features, target: Any) -> None:
        h = layer_matrix(features, self._require_layer())
        num_classes = features.logits.shape[1]
        y = as_labels(target, len(h), num_classes, features.logits)
        protos = np.stack([h[y == c].mean(0) if (y == c).any() else h.mean(0) for c in range(num_classes)])
        if self.ood_prototype_ is None or self.ood_prototype_.shape != (h.shape[1],):
            pairs = list(combinations(range(num_classes), 2))
            mixes = np.stack([self.lam * protos[i] + (1 - self.lam) * protos[j] for i, j in pairs])
            self.ood_prototype_ = mixes.mean(0)
            self.ood_source_ = "penultimate-mixup"
        self.prototypes_ = protos
        idx = np.arange(len(h))
        if len(h) > self.max_train:
            idx = np.sort(np.random.default_rng(self.seed).choice(len(h), self.max_train, replace=False))
        with torch.no_grad():
            g = ncp_gradient(torch.as_tensor(h[idx]), torch.as_tensor(protos), torch.as_tensor(self.ood_prototype_),
                             self.temperature)
        self.bank_ = g.numpy()

    @keeps_model_mode  # evaluated in eval mode; the caller's model comes back in the mode it was given
    def fit_ood_prototype(self, model: nn.Module, data: Any, target: Any = None, *, batch_size: int = 512) -> "GROOD":
        """The OOD prototype by early-layer mix-up (module docstring): class means of ``early_layer``'s output,
        mixed pairwise, pushed through the rest of ``model``; their mean penultimate feature. Runs where the model
        is (it is not moved) and leaves its train/eval mode as it was."""
        from ..data.loading import as_data
        from ..models.features import extract_features

        self.bind(model)
        device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
        layer = self._require_layer()
        early = self.early_layer or first_parametric_layer(model)
        early_module = resolve_layer(model, early)
        d = as_data(data)
        if target is None and d.y is not None:
            target = d.y.numpy()
        if len(d) > self.max_train:           # class means of the early layer from a seeded subsample
            idx = np.sort(np.random.default_rng(self.seed).choice(len(d), self.max_train, replace=False))
            d = d.subset(idx)
            target = None if target is None else np.asarray(target)[idx]
        feats = extract_features(model, d, [early], batch_size=batch_size, device=device)
        e = np.asarray(feats.output(early), dtype=np.float64)
        num_classes = feats.logits.shape[1]
        y = as_labels(target, len(e), num_classes, feats.logits)
        self.check_fit_data(len(e), y)
        present = [c for c in range(num_classes) if (y == c).any()]
        means = {c: e[y == c].mean(0) for c in present}
        mixes = np.stack([self.lam * means[i] + (1 - self.lam) * means[j] for i, j in combinations(present, 2)])
        x = d.x[np.arange(len(mixes)) % len(d.x)]
        shape: dict[str, Any] = {}
        mix_t = torch.as_tensor(mixes)

        def replace(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
            shape["s"] = out.shape
            return mix_t.to(dtype=out.dtype, device=out.device).reshape(out.shape)

        handle = early_module.register_forward_hook(replace)
        try:
            with capture_many({layer: resolve_layer(model, layer)}) as held, torch.no_grad():
                model(x.to(device))
        finally:
            handle.remove()
        self.ood_prototype_ = held[layer].double().cpu().numpy().mean(0)
        self.ood_source_ = f"early-mixup:{early}"
        self.early_layer = early
        return self

    def prepare_fit(self, model: nn.Module, data: Any, target: Any = None) -> "GROOD":
        """What `brittle.ood.Benchmark` calls before `fit`: the early-layer mix-up (`fit_ood_prototype`)."""
        return self.fit_ood_prototype(model, data, target)

    def fit_model(self, model: nn.Module, data: Any, target: Any = None, **extract_options: Any) -> "GROOD":
        """Early-layer mix-up for the OOD prototype, then `fit` on the features of ``data``."""
        from ..data.loading import as_data

        d = as_data(data)
        if target is None and d.y is not None:
            target = d.y.numpy()
        self.fit_ood_prototype(model, d, target)
        return self.fit(self.extract(model, d, **extract_options), target)

    # --- scoring ----------------------------------------------------------------------------------
    def gradients(self, h: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        return ncp_gradient(h.double(), t64(self.prototypes_, h), t64(self.ood_prototype_, h), self.temperature)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        layer = self._require_layer()
        if layer not in outputs:
            raise InputError(f"GROOD needs the output of layer {layer!r}", f"extract features with layer {layer!r}")
        h = outputs[layer].reshape(len(outputs[layer]), -1).double()
        if h.shape[1] != self.prototypes_.shape[1]:
            raise InputError(f"layer {layer!r} has {h.shape[1]} features, GROOD was fitted on {self.prototypes_.shape[1]}",
                             "score features of the layer it was fitted on")
        g = self.gradients(h)
        bank = t64(self.bank_, h)
        k = min(self.k, len(bank))
        out = []
        for a in range(0, len(g), 4096):
            dist = torch.cdist(g[a:a + 4096], bank)
            out.append(dist.kthvalue(k, dim=1).values if k > 1 else dist.min(dim=1).values)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # --- persistence -------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"early_layer": self.early_layer, "lam": self.lam, "temperature": self.temperature, "k": self.k,
                "max_train": self.max_train, "seed": self.seed}

    def _state(self) -> dict[str, Any]:
        return {"prototypes": encode_array(self.prototypes_), "ood_prototype": encode_array(self.ood_prototype_),
                "ood_source": self.ood_source_, "bank": encode_array(self.bank_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.prototypes_ = decode_array(state["prototypes"])
        self.ood_prototype_ = decode_array(state["ood_prototype"])
        self.ood_source_ = state.get("ood_source")
        self.bank_ = decode_array(state["bank"]).astype(np.float64)

    def get_state(self) -> dict[str, Any]:
        s = super().get_state()
        if not self._fitted and self.ood_prototype_ is not None:     # a prototype from fit_ood_prototype alone
            s["ood_prototype"] = encode_array(self.ood_prototype_)
        return s

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if not state.get("fitted") and "ood_prototype" in state:
            self.ood_prototype_ = decode_array(state["ood_prototype"])


