"""Test-time adaptation on an unlabelled test stream: TENT, pseudo-labels, SHOT-IM and BatchNorm statistics,
each on every layer or under the layer-wise gate of LEAST / GALA; online or episodic; metrics over the stream.

One module per method on one base (`base.Adapter`: settings in ``__init__``, state in fitted attributes);
`norm` holds the BatchNorm test-time policies, `gate` the layer-wise gate and its definitions, `stream` the
loop over a stream with its metrics (online accuracy, accuracy per corruption, forgetting, updates per layer)
and the resumable run behind ``brittle adapt``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "Adapter": ".base", "StepOutput": ".base", "entropy": ".base",
    "Tent": ".tent", "PseudoLabel": ".pseudo_label", "ShotIM": ".shot", "BNStats": ".bn", "Source": ".bn",
    "LayerGate": ".gate", "make_gate": ".gate",
    "convert_batchnorm": ".norm", "batchnorm_layers": ".norm", "BN_POLICIES": ".norm",
    "METHODS": ".methods", "make_adapter": ".methods",
    "adapt_stream": ".stream", "AdaptationResult": ".stream", "adapt_run": ".stream", "clean_accuracy": ".stream",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
