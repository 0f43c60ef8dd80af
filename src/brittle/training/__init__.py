"""Training: standard, Madry and TRADES objectives, ε schedules, resumable training runs."""

from .._lazy import lazy_exports

_EXPORTS = {"train": ".trainer", "Trainer": ".trainer", "evaluate": ".trainer", "History": ".trainer",
            "EpochRecord": ".trainer", "Objective": ".objectives", "OBJECTIVES": ".objectives",
            "train_run": ".run", "make_schedule": ".schedules", "Schedule": ".schedules"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
