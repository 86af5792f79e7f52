"""Shared fixtures: every test gets its own STYLER_HOME; the tiny base is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def styler_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "styler-home"
    monkeypatch.setenv("STYLER_HOME", str(home))
    monkeypatch.delenv("STYLER_BASE", raising=False)
    monkeypatch.delenv("STYLER_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # an empty HF cache, so tests never see models the machine happens to have
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return home


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """The built-in tiny base, built once for the whole session."""
    from styler.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def tiny_home(styler_home, tiny_base_dir) -> Path:
    """A home whose models/tiny is the session's prebuilt tiny base (linked, not rebuilt)."""
    from styler.models.tiny import tiny_dir

    target = tiny_dir(styler_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_base_dir, target)
    return styler_home
