"""Deployment monitoring: flag inputs whose score crosses a calibrated threshold."""

from .._lazy import lazy_exports

_EXPORTS = {"Monitor": ".monitor", "MonitorOutput": ".monitor", "MonitorReport": ".monitor"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
