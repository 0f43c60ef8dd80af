"""Models: loading (modules, TorchScript, factories + checkpoints, hub ids), preparation, feature hooks, the zoo."""

from .._lazy import lazy_exports

_EXPORTS = {name: ".loading" for name in (
    "load_model", "prepare_model", "resolve_device", "check_logits", "model_fingerprint", "load_checkpoint",
    "import_factory", "save_torchscript", "LogitsAdapter")}
_EXPORTS["load_checkpoint"] = ".checkpoint"
_EXPORTS.update({name: ".features" for name in (
    "Features", "layer_names", "resolve_layer", "capture", "extract_features")})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
