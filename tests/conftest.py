"""Hypothesis profiles and global-state guards shared by every test.

Profiles: ``HYPOTHESIS_PROFILE=dev|ci|thorough``; the default is ``ci`` when ``CI=true`` (as on
GitHub Actions), else ``dev``. ``tests/`` has no ``__init__.py``, so pytest puts it on
``sys.path`` and test modules import helpers directly: ``from oracles import conv2d_naive``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Let a bare `pytest` (not only `python -m pytest`) import an uninstalled checkout.
if importlib.util.find_spec("tinygrad_cnn") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.register_profile("thorough", deadline=None, max_examples=300)
PROFILE = os.environ.get(
    "HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
)
settings.load_profile(PROFILE)


@pytest.fixture(autouse=True)
def _grad_mode_is_restored() -> Iterator[None]:
    """Fail a test that leaves grad mode disabled (e.g. a ``no_grad`` that did not restore)."""
    yield
    try:
        from tinygrad_cnn import autograd

        is_grad_enabled = autograd.is_grad_enabled
    except (ImportError, AttributeError):  # engine not written yet
        return
    if not is_grad_enabled():
        autograd.enable_grad().__enter__()  # reset so one leak does not fail later tests
        pytest.fail("test left grad mode disabled: a no_grad block did not restore it")


def pytest_report_header() -> str:
    return f"hypothesis profile: {PROFILE}"
