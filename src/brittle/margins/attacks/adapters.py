"""Reference minimal-norm attacks from other libraries, behind optional extras.

Each adapter runs its library with a perturbation cap as large as the input domain allows (so the attack
acts minimal-norm), and returns candidates that `MinimalNormAttack.__call__` verifies: a library failure
becomes ``inf``, never 0. Libraries that assume inputs in [0, 1] see the model through an affine map of the
domain onto [0, 1]. Missing libraries raise `InputError` naming the extra to install.

- ``fab-autoattack``: FAB of AutoAttack (PyPI ``pyautoattack``, extra ``autoattack``), L∞ and L2.
- ``fab-torchattacks``: FAB of torchattacks (extra ``attacks``), L∞ and L2.
- ``deepfool-torchattacks``: DeepFool of torchattacks (extra ``attacks``), L2 only; one sample at a time.
- ``ddn-foolbox``: DDN of foolbox (extra ``foolbox``), L2 only.
- ``fmn-foolbox``: FMN of foolbox (extra ``foolbox``), L∞ and L2.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ...data.loading import Domain
from ...errors import InputError
from .base import MinimalNormAttack

#: method name -> (import name, extra name, PyPI name)
LIBRARIES = {
    "fab-autoattack": ("pyautoattack", "autoattack", "pyautoattack"),
    "fab-torchattacks": ("torchattacks", "attacks", "torchattacks"),
    "deepfool-torchattacks": ("torchattacks", "attacks", "torchattacks"),
    "ddn-foolbox": ("foolbox", "foolbox", "foolbox"),
    "fmn-foolbox": ("foolbox", "foolbox", "foolbox"),
}


def require(method: str) -> ModuleType:
    """Import the library behind ``method`` or raise `InputError` naming the extra to install."""
    module, extra, pypi = LIBRARIES[method]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"method {method!r} needs the {pypi} package, which is not importable ({exc})",
                         f"pip install 'brittle[{extra}]'") from None


def available(method: str) -> bool:
    """Whether the library behind ``method`` can be imported."""
    try:
        require(method)
    except InputError:
        return False
    return True


class UnitBox(nn.Module):
    """The model seen on [0, 1]: ``forward(u) = model(lo + (hi - lo) * u)``."""

    def __init__(self, model: nn.Module, domain: Domain):
        super().__init__()
        self.model = model
        self.lo, self.hi = float(domain[0]), float(domain[1])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.lo == 0.0 and self.hi == 1.0:
            return self.model(u)
        return self.model(self.lo + (self.hi - self.lo) * u)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) / (self.hi - self.lo)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * u


def _unit_cap(norm: str, x: torch.Tensor) -> float:
    """A perturbation cap on [0, 1] no adversarial example can exceed (the diameter of the box)."""
    return 1.0 if norm == "linf" else math.sqrt(x[0].numel()) + 1e-3


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence a library's prints and warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class _FAB(MinimalNormAttack):
    """Settings shared by the FAB adapters (FAB's own names and defaults; ``steps`` 100 as in the FAB paper)."""

    def __init__(self, norm: str = "linf", *, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, seed: int = 0):
        super().__init__(norm, seed=seed)
        require(self.name)
        self.steps, self.restarts, self.alpha_max, self.eta, self.beta = steps, restarts, alpha_max, eta, beta


class AutoAttackFAB(_FAB):
    """FAB of AutoAttack (untargeted, ``steps`` iterations, ``restarts`` restarts; one gradient per class per step)."""

    name = "fab-autoattack"

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        from pyautoattack.fab_pt import FABAttack_PT

        unit = UnitBox(model, domain).eval()
        attack = FABAttack_PT(unit, norm="Linf" if self.norm == "linf" else "L2", n_restarts=self.restarts,
                              n_iter=self.steps, eps=_unit_cap(self.norm, x), alpha_max=self.alpha_max,
                              eta=self.eta, beta=self.beta, seed=self.seed, device=x.device)
        with _quiet():
            adv = attack.perturb(unit.to_unit(x), pred)
        return unit.from_unit(adv)


class TorchattacksFAB(_FAB):
    """FAB of torchattacks (untargeted; ``steps`` defaults to 100 as in the FAB paper, not torchattacks' 10)."""

    name = "fab-torchattacks"

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        import torchattacks

        unit = UnitBox(model, domain).eval()
        with torch.no_grad():
            num_classes = int(unit(unit.to_unit(x[:1])).shape[1])
        with _quiet():
            attack = torchattacks.FAB(unit, norm="Linf" if self.norm == "linf" else "L2",
                                      eps=_unit_cap(self.norm, x), steps=self.steps, n_restarts=self.restarts,
                                      alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, seed=self.seed,
                                      n_classes=num_classes)
            attack.set_device(x.device)
            adv = attack(unit.to_unit(x), pred)
        return unit.from_unit(adv)


class TorchattacksDeepFool(MinimalNormAttack):
    """DeepFool of torchattacks (L2; loops over samples, one Jacobian per step)."""

    name = "deepfool-torchattacks"
    norms = ("l2",)

    def __init__(self, norm: str = "l2", *, steps: int = 50, overshoot: float = 0.02, seed: int = 0):
        super().__init__(norm, seed=seed)
        require(self.name)
        self.steps, self.overshoot = steps, overshoot

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        import torchattacks

        unit = UnitBox(model, domain).eval()
        with _quiet():
            attack = torchattacks.DeepFool(unit, steps=self.steps, overshoot=self.overshoot)
            attack.set_device(x.device)
            adv = attack(unit.to_unit(x), pred)
        return unit.from_unit(adv)


class _FoolboxAttack(MinimalNormAttack):
    """Shared runner of foolbox minimisation attacks (bounds passed as the domain, no cap)."""

    def _make(self, fb: ModuleType) -> Any:
        raise NotImplementedError

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        fb = require(self.name)
        model.eval()
        with _quiet():
            fmodel = fb.PyTorchModel(model, bounds=(float(domain[0]), float(domain[1])), device=x.device)
            _, adv, _ = self._make(fb)(fmodel, x, fb.criteria.Misclassification(pred), epsilons=None)
        return adv


class FoolboxDDN(_FoolboxAttack):
    """DDN of foolbox (Rony et al. 2019; L2)."""

    name = "ddn-foolbox"
    norms = ("l2",)

    def __init__(self, norm: str = "l2", *, steps: int = 100, init_epsilon: float = 1.0, gamma: float = 0.05,
                 seed: int = 0):
        super().__init__(norm, seed=seed)
        require(self.name)
        self.steps, self.init_epsilon, self.gamma = steps, init_epsilon, gamma

    def _make(self, fb: ModuleType) -> Any:
        return fb.attacks.DDNAttack(init_epsilon=self.init_epsilon, steps=self.steps, gamma=self.gamma)


class FoolboxFMN(_FoolboxAttack):
    """FMN of foolbox (Pintor et al. 2021; L∞ and L2)."""

    name = "fmn-foolbox"

    def __init__(self, norm: str = "linf", *, steps: int = 100, max_stepsize: float = 1.0, gamma: float = 0.05,
                 binary_search_steps: int = 10, seed: int = 0):
        super().__init__(norm, seed=seed)
        require(self.name)
        self.steps, self.max_stepsize, self.gamma, self.binary_search_steps = steps, max_stepsize, gamma, \
            binary_search_steps

    def _make(self, fb: ModuleType) -> Any:
        cls = fb.attacks.LInfFMNAttack if self.norm == "linf" else fb.attacks.L2FMNAttack
        return cls(steps=self.steps, max_stepsize=self.max_stepsize, gamma=self.gamma,
                   binary_search_steps=self.binary_search_steps)
