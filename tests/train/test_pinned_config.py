"""A run trains at its base's native size unless told otherwise, and its config.toml pins what was
resolved (the base and the dataset's version), so `train --config runs/<id>/config.toml` trains
that run again, not whatever today's defaults and newest dataset version would give."""

import tomllib

import pytest

from registry import Registry, Run
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # trains the tiny pipeline


def _only_run(reg, exclude=()):
    runs = [r for r in reg.all(Run) if r.id not in exclude]
    assert len(runs) == 1, runs
    return runs[0]


def test_resolution_defaults_to_the_native_size_and_the_config_pins_base_and_version(calli, styler_home):
    from styler.data.library import synth_dataset

    r = run_cli("train", calli, "--steps", "1", "--rank", "2", "--base", "tiny")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    reg = Registry()
    run = _only_run(reg)
    saved = tomllib.loads((styler_home / "runs" / run.id / "config.toml").read_text("utf-8"))
    assert saved["resolution"] == 64  # the tiny base: UNet sample_size 8 x VAE factor 8, not 512
    assert saved["dataset"] == f"{calli}@1"
    assert saved["base"] == "tiny"
    assert run.config["resolution"] == 64

    # a newer version of the dataset appears; the saved config still names version 1
    synth_dataset(calli, kind="calligraphy", n=6, size=64, seed=5, trigger="mifu")
    r = run_cli("train", "--config", str(styler_home / "runs" / run.id / "config.toml"), "--name", "again/mifu")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    again = _only_run(Registry(), exclude={run.id})
    assert again.config["dataset"] == f"{calli}@1"
    assert again.dataset_id == run.dataset_id
    assert again.config["resolution"] == 64
