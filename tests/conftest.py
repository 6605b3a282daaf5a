"""Shared pytest setup: `slow` tests run only with RUN_SLOW=1, `gpu` tests only with CUDA; the env's disk
cache of scenes goes to a fresh temporary folder per test session, so tests never read or fill the user's
``~/.cache`` (and always exercise the cold path first)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

if "V4S_CACHE_DIR" not in os.environ:  # before any env is made; worker processes inherit it
    os.environ["V4S_CACHE_DIR"] = tempfile.mkdtemp(prefix="v4s_test_cache_")
    atexit.register(shutil.rmtree, os.environ["V4S_CACHE_DIR"], True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("RUN_SLOW", "0") not in ("", "0", "false", "False")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    skip_slow = pytest.mark.skip(reason="slow test: set RUN_SLOW=1")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
