"""Fixtures for the dashboard tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import build_fixed_home


@pytest.fixture
def fixed_home(styler_home) -> Path:
    build_fixed_home(styler_home)
    return styler_home
