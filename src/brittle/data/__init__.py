"""Data: the `Data` container, loaders (tensors, arrays, npz, idx folders, bundled MNIST, torchvision),
input validation, and corruptions / test streams for distribution shift (`corruptions`)."""

from .._lazy import lazy_exports

_EXPORTS = {name: ".loading" for name in (
    "Data", "Domain", "DEFAULT_DOMAIN", "as_data", "validate", "load_data", "load_digits", "load_mnist", "load_npz",
    "load_torchvision", "read_idx", "FASHION_MNIST_CLASSES")}
_EXPORTS.update({name: ".corruptions" for name in (
    "CORRUPTIONS", "CORRUPTION_NAMES", "SEVERITIES", "corrupt", "apply_shift", "parse_shifts", "Segment", "Stream",
    "shift_stream", "continual_stream", "label_sorted", "class_imbalanced")})
_EXPORTS.update({name: ".ood_sets" for name in ("OOD_SETS", "load_ood_set", "load_fashion_mnist_test")})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
