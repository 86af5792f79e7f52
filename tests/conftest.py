"""Shared fixtures: every test gets its own STYLER_HOME; the tiny base is built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Under pytest-xdist each worker gets its share of the cores for torch's threads (and so do the
# processes it starts, which inherit the variable): two workers of two threads each on two cores
# oversubscribe them, and OpenMP's spinning barriers then make every torch op crawl. Set here, at
# import, before any test module imports torch. An OMP_NUM_THREADS the caller set is kept.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

# The longest tests, started first: with `--dist worksteal` (pyproject addopts) the other worker
# takes the rest and steals from this one's queue, so both finish together. Collected late, the
# world effects test alone (~2-3 minutes) once kept one worker busy after the other was done.
HEAVY_FIRST = ("tests/test_world_effects.py", "tests/test_demo.py", "tests/train/test_distributed.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return HEAVY_FIRST.index(path) if path in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its order


@pytest.fixture(autouse=True)
def styler_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "styler-home"
    monkeypatch.setenv("STYLER_HOME", str(home))
    monkeypatch.delenv("STYLER_BASE", raising=False)
    monkeypatch.delenv("STYLER_DEBUG", raising=False)
    for name in ("STYLER_DEVICE", "STYLER_DTYPE", "STYLER_CLIP"):
        monkeypatch.delenv(name, raising=False)
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
    from tests.helpers import link_tiny

    link_tiny(styler_home, tiny_base_dir)
    return styler_home


STYLES = {"anime": "pixel", "watercolor": "watercolor", "ink": "calligraphy"}


@pytest.fixture(scope="session")
def styled_template(tmp_path_factory, tiny_base_dir):
    """A home with the tiny base and three small trained LoRAs, built once per session."""
    from tests.helpers import home_env, link_tiny, run_cli

    home = tmp_path_factory.mktemp("styled") / "home"
    with home_env(home):
        link_tiny(home, tiny_base_dir)
        from styler.data.library import synth_dataset

        for i, (name, kind) in enumerate(STYLES.items()):
            synth_dataset(name, kind=kind, n=4, size=32, seed=i)
            r = run_cli("train", name, "--base", "tiny", "--resolution", "32", "--steps", "3", "--lr", "5e-2",
                        "--rank", str(2 + 2 * i), "--alpha", str(1 + i), "--targets", "attn" if i != 1 else "attn+conv")
            assert r.exit_code == 0, r.stderr
    return home


@pytest.fixture
def styled(styler_home, styled_template):
    """This test's own copy of the styled home."""
    shutil.copytree(styled_template, styler_home, symlinks=True)
    return styler_home


@pytest.fixture(scope="session")
def checkpointed_template(tmp_path_factory, tiny_base_dir):
    """A home with one LoRA (UNet + text encoder) trained 4 steps, with validation images at steps 2 and 4
    (two prompts) and a checkpoint at step 2, and the same training stopped at step 2 (`ink2`), built
    once per session."""
    from tests.helpers import home_env, link_tiny, run_cli

    home = tmp_path_factory.mktemp("checkpointed") / "home"
    with home_env(home):
        link_tiny(home, tiny_base_dir)
        from styler.data.library import synth_dataset

        synth_dataset("ink", kind="calligraphy", n=4, size=32, seed=0)
        common = ["--base", "tiny", "--resolution", "32", "--lr", "5e-2", "--rank", "4", "--alpha", "2",
                  "--text-encoder", "--checkpoint-every", "2", "--keep-checkpoints", "2"]
        fast_validation = home.parent / "validation.toml"  # 2 sampler steps per validation image, not 20
        fast_validation.write_text("validation_steps = 2\n", encoding="utf-8")
        r = run_cli("train", "ink", *common, "--steps", "4", "--validate-every", "2", "--config", fast_validation,
                    "--validation-prompt", "ink, 书法 永", "--validation-prompt", "a red circle")
        assert r.exit_code == 0, r.stderr
        r = run_cli("train", "ink", *common, "--name", "ink2", "--steps", "2")
        assert r.exit_code == 0, r.stderr
    return home


@pytest.fixture
def checkpointed(styler_home, checkpointed_template):
    """This test's own copy of the checkpointed home."""
    shutil.copytree(checkpointed_template, styler_home, symlinks=True)
    return styler_home
