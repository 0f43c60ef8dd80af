"""Minimal-norm attacks (one file per attack over `base.MinimalNormAttack`) and the registry of methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import InputError
from .adapters import (AutoAttackFAB, FoolboxDDN, FoolboxFMN, TorchattacksDeepFool, TorchattacksFAB, available)
from .base import AttackResult, Cost, MinimalNormAttack, keep_best, perturbation_norm, verify
from ...core.validation import NORMS, check_norm
from .ensemble import Ensemble
from .fast_boundary import FastBoundaryAttack

#: attack method name -> attack class
ATTACKS: dict[str, type[MinimalNormAttack]] = {
    "brittle": FastBoundaryAttack,
    "fab-autoattack": AutoAttackFAB,
    "fab-torchattacks": TorchattacksFAB,
    "deepfool-torchattacks": TorchattacksDeepFool,
    "ddn-foolbox": FoolboxDDN,
    "fmn-foolbox": FoolboxFMN,
}
#: every method name `make_attack` accepts
ATTACK_METHODS = (*ATTACKS, "ensemble")

MemberSpec = str | tuple[str, Mapping[str, Any]] | MinimalNormAttack


def default_ensemble(norm: str) -> list[MemberSpec]:
    """brittle's attack, a longer randomly restarted run of it, and the installed reference attacks for ``norm``.

    DeepFool of torchattacks is left out (it loops over samples); pass it explicitly to include it.
    """
    norm = check_norm(norm)
    members: list[MemberSpec] = ["brittle", ("brittle", {"restarts": 2, "patience": 25, "steps": 200})]
    for name in ("fab-autoattack", "fmn-foolbox", "ddn-foolbox"):
        if norm in ATTACKS[name].norms and available(name):
            members.append(name)
    return members


def make_attack(method: str, norm: str = "linf", *, seed: int = 0, **options: Any) -> MinimalNormAttack:
    """The attack named ``method`` (see `ATTACK_METHODS`) for ``norm``, built with ``options``.

    ``method="ensemble"`` takes ``attacks=[...]``: names, ``(name, options)`` pairs or attack objects
    (default: `default_ensemble`); remaining options go to members built from a bare name.
    """
    if not isinstance(method, str) or method not in ATTACK_METHODS:
        raise InputError(f"unknown attack method {method!r}", f"use one of: {', '.join(ATTACK_METHODS)}")
    norm = check_norm(norm)
    if method == "ensemble":
        specs = options.pop("attacks", None)
        specs = default_ensemble(norm) if specs is None else specs
        if isinstance(specs, (str, MinimalNormAttack)) or not isinstance(specs, Sequence):
            specs = [specs]
        members = []
        for i, spec in enumerate(specs):
            if isinstance(spec, MinimalNormAttack):
                members.append(spec)
            elif isinstance(spec, str):
                if spec == "ensemble":
                    raise InputError("an ensemble cannot contain 'ensemble'", "list the member attacks")
                members.append(make_attack(spec, norm, seed=seed + i, **options))
            elif (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
                  and isinstance(spec[1], Mapping)):
                member = make_attack(spec[0], norm, seed=seed + i, **dict(spec[1]))
                if spec[1]:
                    member.name = f"{spec[0]}[{','.join(f'{k}={v}' for k, v in spec[1].items())}]"
                members.append(member)
            else:
                raise InputError(f"ensemble member {spec!r} is not a method name, (name, options) pair or attack",
                                 "pass e.g. attacks=['brittle', ('fab-autoattack', {'steps': 50})]")
        return Ensemble(members, norm, seed=seed)
    import inspect

    from ...core.registry import check_params

    params = inspect.signature(ATTACKS[method]).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):  # unknown options, by name
        check_params(f"method {method!r}", options, [n for n in params if n not in ("self", "norm", "seed")])
    try:
        return ATTACKS[method](norm, seed=seed, **options)
    except TypeError as exc:
        raise InputError(f"invalid options for method {method!r}: {exc}",
                         f"see help(brittle.margins.attacks.{ATTACKS[method].__name__}) for its options") from None


__all__ = [
    "ATTACKS", "ATTACK_METHODS", "NORMS", "AttackResult", "AutoAttackFAB", "Cost", "Ensemble", "FastBoundaryAttack",
    "FoolboxDDN", "FoolboxFMN", "MinimalNormAttack", "TorchattacksDeepFool", "TorchattacksFAB", "available",
    "check_norm", "default_ensemble", "keep_best", "make_attack", "perturbation_norm", "verify",
]
