"""Finding a repo in the local Hugging Face cache (styler.models.resolve.hf_snapshot): the snapshot
`refs/main` names, as huggingface_hub resolves it offline, for base models and CLIP models alike."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from styler.errors import ModelNotFound
from styler.models.resolve import hf_snapshot, resolve_base, scan_hf_cache

OLD, NEW = "1" * 40, "2" * 40


def hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def fake_repo(repo_id: str, files: dict[str, dict], main: str | None = OLD) -> Path:
    """Two snapshots of `repo_id`, OLD and NEW, NEW with the newer mtime; refs/main -> `main`."""
    repo = hf_cache() / ("models--" + repo_id.replace("/", "--"))
    for age, rev in enumerate((OLD, NEW)):
        snap = repo / "snapshots" / rev
        for rel, data in files.items():
            path = snap / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**data, "_rev": rev}) if rel.endswith(".json") else rev)
        stamp = 1_700_000_000 + 1000 * age
        for p in [snap, *snap.rglob("*")]:
            os.utime(p, (stamp, stamp))
    if main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(main)
    return repo


PIPELINE = {"model_index.json": {"_class_name": "StableDiffusionPipeline"},
            "unet/config.json": {"cross_attention_dim": 768}}


def test_refs_main_wins_over_a_newer_snapshot():
    repo = fake_repo("org/name", PIPELINE)
    old = (repo / "snapshots" / OLD).resolve()
    assert hf_snapshot("org/name") == old
    assert [(m["repo_id"], m["path"]) for m in scan_hf_cache()] == [("org/name", old)]
    base = resolve_base("org/name", allow_download=False)
    assert (base.kind, base.path) == ("hf", old)


def test_main_pointing_at_the_newer_snapshot_is_followed():
    repo = fake_repo("org/name", PIPELINE, main=NEW)
    assert hf_snapshot("org/name") == (repo / "snapshots" / NEW).resolve()


def test_without_refs_main_nothing_is_guessed():
    fake_repo("org/name", PIPELINE, main=None)
    assert hf_snapshot("org/name") is None and scan_hf_cache() == []
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        resolve_base("org/name", allow_download=False)


def test_a_repo_id_in_another_case_is_found():
    repo = fake_repo("Org/Name", PIPELINE)
    assert hf_snapshot("org/name") == (repo / "snapshots" / OLD).resolve()
    assert hf_snapshot("org/other") is None


def test_a_snapshot_the_hub_lists_as_partial_is_still_found():
    """styler downloads only what diffusers loads; huggingface_hub >= 2 then knows the snapshot
    lacks files (safety_checker/…) and raises IncompleteSnapshotError offline."""
    tree = pytest.importorskip("huggingface_hub._tree_cache")
    repo = fake_repo("org/name", PIPELINE)
    entries = {rel: tree.TreeCacheEntry(size=1, blob_id="0" * 40) for rel in [*PIPELINE, "safety_checker/model.bin"]}
    tree.write_tree_cache(str(repo), OLD, entries)
    assert tree.read_tree_cache(str(repo), OLD) is not None
    assert hf_snapshot("org/name") == (repo / "snapshots" / OLD).resolve()


def test_clip_models_are_found_the_same_way(styler_home):
    from styler.eval.features import resolve_clip

    repo = fake_repo("acme/clip", {"config.json": {"model_type": "clip"}, "model.safetensors": {}})
    ref = resolve_clip("acme/clip")
    assert (ref.kind, ref.path) == ("hf", (repo / "snapshots" / OLD).resolve())
    assert json.loads((ref.path / "config.json").read_text())["_rev"] == OLD


def test_no_other_module_reads_the_cache_layout():
    """refs/ and snapshots/ are huggingface_hub's business: only its API reads them."""
    root = Path(__file__).resolve().parents[2]
    readers = [p.relative_to(root).as_posix() for p in root.glob("styler/**/*.py")
               if '"refs"' in p.read_text("utf-8") or '"snapshots"' in p.read_text("utf-8")]
    assert readers == []
