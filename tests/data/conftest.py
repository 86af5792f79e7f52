"""Fixtures for the dataset tests: tiny captioning models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .captioners import build_tiny_blip, build_tiny_florence2, build_tiny_git


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    """A random BLIP whose every caption is 'ink ink …'."""
    return build_tiny_blip(tmp_path_factory.mktemp("captioners") / "tiny-blip", word="ink")


@pytest.fixture(scope="session")
def tiny_git(tmp_path_factory) -> Path:
    """A random GIT whose every caption is 'cat cat …'."""
    return build_tiny_git(tmp_path_factory.mktemp("captioners") / "tiny-git", word="cat")


@pytest.fixture(scope="session")
def tiny_florence2(tmp_path_factory) -> Path:
    """A random Florence-2 whose every caption is 'fox fox …'."""
    return build_tiny_florence2(tmp_path_factory.mktemp("captioners") / "tiny-florence2", word="fox")
