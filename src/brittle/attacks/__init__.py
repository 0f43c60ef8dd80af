"""Minimal-norm attacks (one file per attack over `base.MinimalNormAttack`)."""

from .base import NORMS, AttackResult, Cost, MinimalNormAttack, check_norm, perturbation_norm, verify

__all__ = ["NORMS", "AttackResult", "Cost", "MinimalNormAttack", "check_norm", "perturbation_norm", "verify"]
