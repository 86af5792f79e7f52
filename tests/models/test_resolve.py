"""Base model resolution, listing, identity and loader errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from styler.errors import InputError, ModelNotFound, StylerError, UsageError
from styler.models.resolve import TINY_NOTICE, base_identity, list_models, resolve_base

REV = "0123456789abcdef0123456789abcdef01234567"


def fake_hf_repo(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay `source` out the way huggingface_hub caches a repo: blobs named by sha256, a snapshot
    of symlinks, refs/main. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / REV
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for src in sorted(source.rglob("*")):
        if not src.is_file():
            continue
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / src.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return snap


def hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def write_settings(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, "utf-8")


def test_missing_path():
    with pytest.raises(ModelNotFound, match="/no/such/model"):
        resolve_base("/no/such/model")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelNotFound, match="model_index.json") as info:
        resolve_base(str(tmp_path))
    assert str(tmp_path) in info.value.message and info.value.exit_code == 2


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickles_refused(tmp_path, suffix):
    f = tmp_path / f"model{suffix}"
    f.write_bytes(b"not really a pickle")
    with pytest.raises(UsageError, match="safetensors") as info:
        resolve_base(str(f))
    assert "unpickle" in info.value.message


def test_unknown_repo_id_explains_fix(styler_home):
    with pytest.raises(ModelNotFound) as info:
        resolve_base("someorg/somemodel")
    msg = info.value.message
    assert "someorg/somemodel" in msg and str(hf_cache()) in msg
    for hint in ("--base", "STYLER_BASE", str(styler_home / "config.toml"), "allow_download"):
        assert hint in msg


@pytest.mark.slow
def test_folder_and_single_file(tiny_base_dir, tmp_path):
    base = resolve_base(str(tiny_base_dir))
    assert (base.kind, base.path) == ("folder", tiny_base_dir.resolve())
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    assert resolve_base(str(f)).kind == "single_file"


@pytest.mark.slow
def test_precedence_argument_env_settings(tiny_home, tiny_base_dir, monkeypatch, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(tiny_base_dir, folder)
    write_settings(tiny_home, f'base = "{folder}"\n')
    assert resolve_base().path == folder.resolve()  # settings file
    monkeypatch.setenv("STYLER_BASE", "tiny")
    assert resolve_base().kind == "tiny"  # env beats settings
    assert resolve_base(str(folder)).kind == "folder"  # argument beats env
    monkeypatch.setenv("STYLER_BASE", "/nope/nothing")
    with pytest.raises(ModelNotFound, match=r"from STYLER_BASE"):
        resolve_base()


def test_settings_base_error_names_config(styler_home):
    write_settings(styler_home, 'base = "/nope/nothing"\n')
    with pytest.raises(ModelNotFound, match="config.toml"):
        resolve_base()


@pytest.mark.slow
def test_auto_falls_back_to_tiny_with_notice(tiny_home):
    base = resolve_base()
    assert base.kind == "tiny" and base.detail == TINY_NOTICE


@pytest.mark.slow
def test_auto_prefers_sd15_in_hf_cache(tiny_home, tiny_base_dir, tmp_path):
    # a toy pipeline in the cache is not SD-1.5: auto still picks tiny
    fake_hf_repo(hf_cache(), "org/toy", tiny_base_dir)
    assert resolve_base().kind == "tiny"
    sd15 = tmp_path / "sd15"
    shutil.copytree(tiny_base_dir, sd15)
    (sd15 / "styler_tiny.json").unlink()
    cfg = json.loads((sd15 / "unet" / "config.json").read_text())
    (sd15 / "unet" / "config.json").write_text(json.dumps(dict(cfg, cross_attention_dim=768)))
    snap = fake_hf_repo(hf_cache(), "stable-diffusion-v1-5/stable-diffusion-v1-5", sd15)
    base = resolve_base()
    assert (base.name, base.kind, base.path) == ("stable-diffusion-v1-5/stable-diffusion-v1-5", "hf", snap)


@pytest.mark.slow
def test_fake_hf_cache_listed_resolved_and_loaded(tiny_home, tiny_base_dir):
    from styler.models import load_pipeline

    snap = fake_hf_repo(hf_cache(), "org/name", tiny_base_dir)
    rows = {r["name"]: r for r in list_models()}
    assert rows["org/name"]["kind"] == "hf" and rows["org/name"]["status"] == "cached"
    assert rows["org/name"]["path"] == str(snap)
    assert rows["tiny"]["status"] == "built"
    base = resolve_base("org/name")
    assert (base.kind, base.path) == ("hf", snap)
    pipe = load_pipeline(base)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    # same bytes as tiny -> same identity; blobs are trusted by their sha256 names
    assert base_identity(base)["hash"] == base_identity(resolve_base("tiny"))["hash"]


def test_list_models_unbuilt_tiny_and_configured_error(styler_home):
    write_settings(styler_home, 'base = "/nope/nothing"\n')
    rows = list_models()
    assert rows[0]["name"] == "tiny" and rows[0]["status"].startswith("not built")
    assert rows[1]["status"] == "error" and "/nope/nothing" in rows[1]["detail"]
    assert not (styler_home / "models").exists()  # listing builds nothing


@pytest.mark.slow
def test_identity_is_cached(tiny_home, monkeypatch):
    base = resolve_base("tiny")
    ident = base_identity(base)
    assert set(ident) == {"name", "kind", "hash"} and len(ident["hash"]) == 64
    cache = json.loads((tiny_home / "models" / "hashes.json").read_text())
    assert len(cache) == 4  # model_index.json + unet, vae, text_encoder weights
    import registry.blobs

    def boom(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(registry.blobs, "sha256_file", boom)
    assert base_identity(base) == ident


def test_single_file_identity_is_file_sha256(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"some bytes")
    assert base_identity(resolve_base(str(f)))["hash"] == hashlib.sha256(b"some bytes").hexdigest()


def _broken_copy(tiny_base_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_base_dir, folder)
    return folder, folder / "unet" / "diffusion_pytorch_model.safetensors"


@pytest.mark.slow
def test_truncated_weights_give_one_line_error(tiny_base_dir, tmp_path):
    from styler.models import load_pipeline

    folder, weights = _broken_copy(tiny_base_dir, tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        load_pipeline(resolve_base(str(folder)))
    assert str(weights) in info.value.message and "truncated" in info.value.message
    assert "\n" not in info.value.message
    weights.write_bytes(data[:5])
    with pytest.raises(InputError, match="not a valid safetensors"):
        load_pipeline(resolve_base(str(folder)))


@pytest.mark.slow
def test_missing_weights_named(tiny_base_dir, tmp_path):
    from styler.models import load_pipeline

    folder, weights = _broken_copy(tiny_base_dir, tmp_path)
    weights.unlink()
    with pytest.raises(StylerError, match=str(folder / "unet")):
        load_pipeline(resolve_base(str(folder)))


@pytest.mark.slow
def test_loader_errors_are_wrapped(tiny_base_dir, tmp_path, monkeypatch):
    import styler.models.load as load

    folder, weights = _broken_copy(tiny_base_dir, tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(load, "check_folder", lambda path: None)  # let diffusers meet the bad file
    with pytest.raises(InputError, match="cannot load base model 'broken'") as info:
        load.load_pipeline(resolve_base(str(folder)))
    assert "\n" not in info.value.message


def _tiny_safetensors(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.foo.weight": torch.zeros(2, 2)}, str(path))
    return path


def test_single_file_without_configs(tmp_path):
    from styler.models import load_pipeline

    base = resolve_base(str(_tiny_safetensors(tmp_path / "m.safetensors")))
    with pytest.raises(ModelNotFound, match="single-file checkpoint needs the SD-1.5 configs") as info:
        load_pipeline(base)
    assert "STYLER_SINGLE_FILE_CONFIG" in info.value.message


@pytest.mark.slow
def test_single_file_bad_checkpoint_wrapped(tmp_path, tiny_base_dir):
    from styler.models import load_pipeline

    base = resolve_base(str(_tiny_safetensors(tmp_path / "m.safetensors")))
    with pytest.raises(InputError, match="cannot load base model 'm'"):
        load_pipeline(base, config=tiny_base_dir)
