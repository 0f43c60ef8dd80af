"""Tests of brittle.llm on tiny random Llama models; skipped with a reason when the llm extra is missing."""

import importlib.util

import pytest
import torch

_missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]


def pytest_configure(config):
    config.addinivalue_line("markers", "no_extra: runs without the llm extra installed")


def pytest_collection_modifyitems(config, items):
    if not _missing:
        return
    skip = pytest.mark.skip(reason=f"the llm extra is not installed (missing {', '.join(_missing)}): "
                                   'pip install "brittle[llm]"')
    for item in items:
        if "tests/llm" in str(item.fspath).replace("\\", "/") and "no_extra" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny():
    from brittle.llm.models import tiny_llama

    return tiny_llama(seed=0)
