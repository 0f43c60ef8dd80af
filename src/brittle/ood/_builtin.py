"""Importing this module registers every built-in OOD detector in `brittle.scores.base.SCORERS`
(`brittle.scores.base.BUILTIN_MODULES` lists it). A new detector is a new module plus a line here."""

import importlib

#: detector modules, in the order reports list them; other packages (combinations, GROOD) append theirs
OOD_MODULES: list[str] = [
    "msp", "max_logit", "energy", "entropy", "gen", "kl_matching", "odin", "mahalanobis", "rmd", "knn", "vim",
    "gradnorm", "she", "react", "ash", "scale", "dice",
]
OOD_MODULES += ["grood", "combine.detector"]  # issue #16: GROOD and the combined detector (brittle.ood.combine)

for _name in OOD_MODULES:
    importlib.import_module(f"brittle.ood.{_name}")
