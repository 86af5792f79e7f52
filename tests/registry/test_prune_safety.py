"""`prune` and `verify` key off records, refuse to act on a damaged registry, and clean up after
killed writers; `rebuild` restores dataset and adapter records from the files on disk."""

import json
import os
import time

from registry import Dataset, Registry
from registry.maintenance import execute_prune, plan_prune
from tests.helpers import make_images, run_cli


def _orphan(home, *parts):
    d = home.joinpath("datasets", *parts)
    d.mkdir(parents=True)
    (d / "x.png").write_bytes(b"12345")
    return d


def test_prune_keeps_a_registered_dataset_whose_name_is_all_digits(styler_home, tmp_path):
    make_images(tmp_path / "src", 2)
    for name in ("art/2024", "7/8", "2024"):
        r = run_cli("data", "add", name, tmp_path / "src")
        assert r.exit_code == 0, r.stderr
    orphans = [_orphan(styler_home, "art", "2024", "7"), _orphan(styler_home, "ns", "old", "1"),
               _orphan(styler_home, "2024", "5")]
    reg = Registry()
    kept = [styler_home / d.path for d in reg.all(Dataset)]

    plan = json.loads(run_cli("registry", "prune", "--dry-run", "--json").stdout)
    assert sorted(p for p, _ in plan["orphan_dirs"]) == sorted(map(str, orphans))
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 0, r.stderr
    assert all((k / "manifest.json").is_file() for k in kept)
    assert not any(o.exists() for o in orphans)
    assert not (styler_home / "datasets" / "ns").exists()  # emptied parents go too
    assert run_cli("registry", "verify").stdout.strip() == "registry ok"


def test_prune_never_touches_folders_inside_a_registered_dataset(styler_home):
    reg = Registry()
    d = reg.insert(Dataset(name="one", version=1, path="datasets/one/1"))
    inner = styler_home / d.path / "2"  # e.g. a user's sub-folder that happens to be all digits
    inner.mkdir(parents=True)
    (styler_home / d.path / "manifest.json").write_text("{}")
    assert plan_prune(reg).orphan_dirs == []
    execute_prune(reg, plan_prune(reg))
    assert inner.is_dir()
