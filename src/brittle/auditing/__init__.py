"""The audit: margins → analysis → extras (pseudo-margin, monitor) → results and report, resumable."""

from .._lazy import lazy_exports

_EXPORTS = {"audit": ".pipeline", "Audit": ".result", "Run": ".result", "load_run": ".result",
            "AuditStage": ".stages", "PseudoMarginStage": ".stages", "MonitorStage": ".stages",
            "SubsetEstimateStage": ".stages", "STAGES": ".stages"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
