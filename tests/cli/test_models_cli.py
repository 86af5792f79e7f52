"""`styler models ls` and `styler models show` through the root app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from styler.cli.main import app
from tests.models.test_resolve import fake_hf_repo


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_ls_lists_tiny_unbuilt_without_building(styler_home):
    result = invoke("models", "ls")
    assert result.exit_code == 0, result.output
    assert "tiny" in result.stdout and "not built" in result.stdout
    assert not (styler_home / "models").exists()


@pytest.mark.slow
def test_ls_json_with_hf_cache(tiny_home, tiny_base_dir):
    snap = fake_hf_repo(Path(os.environ["HF_HUB_CACHE"]), "org/name", tiny_base_dir)
    result = invoke("models", "ls", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["tiny"]["status"] == "built"
    assert rows["org/name"] == {"name": "org/name", "kind": "hf", "path": str(snap), "source": "hf-cache",
                                "status": "cached", "detail": "family tiny"}


@pytest.mark.slow
def test_show_tiny(tiny_home):
    result = invoke("models", "show", "tiny")
    assert result.exit_code == 0, result.output
    for word in ("tiny", "unet", "UNet2DConditionModel", "vae", "text_encoder", "hash:", "vocab"):
        assert word in result.stdout


@pytest.mark.slow
def test_show_tiny_json(tiny_home):
    result = invoke("models", "show", "tiny", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["kind"] == "tiny" and len(info["hash"]) == 64
    comps = {c["name"]: c for c in info["components"]}
    assert set(comps) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert comps["unet"]["params"] > 100_000 and comps["unet"]["dtypes"] == ["F32"]
    assert info["params"] == sum(c["params"] or 0 for c in comps.values())


def test_show_nonexistent_is_one_line_usage_error():
    result = invoke("models", "show", "/nonexistent")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert "/nonexistent" in result.stderr and result.stdout == ""


def test_show_unknown_repo(styler_home):
    result = invoke("models", "show", "org/missing")
    assert result.exit_code == 2
    assert "org/missing" in result.stderr and "--base" in result.stderr


def test_models_help():
    result = invoke("models", "--help")
    assert result.exit_code == 0
    assert "ls" in result.stdout and "show" in result.stdout


@pytest.mark.parametrize("module", ["styler.cli.models_cmd", "styler.models"])
def test_no_torch_on_import(module):
    code = f"import sys, {module}; sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
