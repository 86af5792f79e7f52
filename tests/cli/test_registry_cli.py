"""`styler registry ls|show|verify|prune`."""

import json
import os
import time

import pytest

from registry import Adapter, BlobStore, Dataset, Output, Registry
from tests.helpers import make_images, run_cli


def test_ls_counts_and_table_listing(styler_home, tmp_path):
    make_images(tmp_path / "src", 2)
    run_cli("data", "add", "ns/one", tmp_path / "src")
    Registry().insert(Output(prompt="a [bold]cat[/bold]", adapters=[{"name": "anime", "weight": 0.5}]))
    r = run_cli("registry", "ls")
    assert r.exit_code == 0 and "datasets  1" in r.stdout and "outputs   1" in r.stdout
    counts = json.loads(run_cli("registry", "ls", "--json").stdout)["counts"]
    assert counts == {"datasets": 1, "adapters": 0, "runs": 0, "outputs": 1, "scores": 0, "jobs": 0}
    r = run_cli("registry", "ls", "outputs")
    assert "anime=0.5" in r.stdout and "[bold]cat[/bold]" in r.stdout
    rows = json.loads(run_cli("registry", "ls", "datasets", "--json").stdout)
    assert rows[0]["name"] == "ns/one"


def test_ls_unknown_table():
    r = run_cli("registry", "ls", "bananas")
    assert r.exit_code == 2 and "datasets, adapters" in r.stderr


def test_show_by_id_and_by_name(styler_home, tmp_path):
    make_images(tmp_path / "src", 1)
    run_cli("data", "add", "shown", tmp_path / "src")
    d = Registry().resolve(Dataset, "shown")
    for ref in (d.id, d.id.lower(), "shown@1", "shown"):
        r = run_cli("registry", "show", ref, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["id"] == d.id
    assert "dataset shown@1" in run_cli("registry", "show", d.id).stdout
    r = run_cli("registry", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.exit_code == 1 and "nothing in the registry matches" in r.stderr


def test_show_refuses_a_name_that_is_both_a_dataset_and_an_adapter(styler_home, tmp_path):
    make_images(tmp_path / "src", 1)
    run_cli("data", "add", "twin", tmp_path / "src")
    d = Registry().resolve(Dataset, "twin")
    a = Registry().insert(Adapter(name="twin", version=1, blob="b" * 64))
    r = run_cli("registry", "show", "twin")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"dataset twin@1 ({d.id}) or adapter twin@1 ({a.id})" in r.stderr and "give the id" in r.stderr
    assert json.loads(run_cli("registry", "show", a.id, "--json").stdout)["table"] == "adapters"


def test_verify_ok_then_reports(styler_home):
    assert run_cli("registry", "verify").stdout.strip() == "registry ok"
    Registry().insert(Output(blob="a" * 64))
    r = run_cli("registry", "verify", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)[0]["kind"] == "missing-blob"


def test_prune_dry_run_then_yes(styler_home):
    store = BlobStore(styler_home)
    digest = store.put_bytes(b"x" * 2048)
    Registry().count(Output)
    r = run_cli("registry", "prune", "--dry-run")
    assert r.exit_code == 0 and digest[:16] in r.stdout and "would free 2.0 KiB" in r.stdout
    assert store.has(digest)
    plan = json.loads(run_cli("registry", "prune", "--dry-run", "--json").stdout)
    assert plan["bytes"] == 2048
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 0 and "freed 2.0 KiB" in r.stdout and not store.has(digest)
    assert run_cli("registry", "prune", "-y").stdout.strip() == "nothing to prune"


def test_prune_asks_and_can_be_declined(styler_home):
    from typer.testing import CliRunner

    from styler.cli.main import app

    digest = BlobStore(styler_home).put_bytes(b"keep me")
    r = CliRunner().invoke(app, ["registry", "prune"], input="n\n")
    assert r.exit_code == 1 and BlobStore(styler_home).has(digest)


# -- a damaged registry: verify flags it, prune refuses, rebuild restores -----------------------

def _two_datasets(tmp_path):
    from tests.helpers import make_images

    make_images(tmp_path / "src", 2)
    for name in ("ns/one", "art/2024"):
        assert run_cli("data", "add", name, tmp_path / "src").exit_code == 0
    return sorted((d.label, d.path, d.content_hash) for d in Registry().all(Dataset))


def test_an_empty_table_fails_verify_prune_refuses_and_rebuild_restores(styler_home, tmp_path):
    from tests.helpers import tree

    before = _two_datasets(tmp_path)
    files = tree(styler_home / "datasets")
    table = styler_home / "registry" / "datasets.json"
    table.write_bytes(b"")  # `: > registry/datasets.json`

    r = run_cli("registry", "verify")
    assert r.exit_code == 1 and "datasets.json is corrupt (it is empty)" in r.stdout
    assert "styler registry rebuild" in r.stdout and "registry ok" not in r.stdout
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: cannot prune: registry table datasets is damaged or missing (registry/datasets.json)")
    assert "styler registry rebuild" in r.stderr
    r = run_cli("data", "ls")
    assert r.exit_code == 1 and "styler registry rebuild" in r.stderr and r.stderr.count("\n") == 1

    r = run_cli("registry", "rebuild", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "dataset ns/one@1" in r.stdout and "dataset art/2024@1" in r.stdout and "would restore 2 record(s)" in r.stdout
    assert table.read_bytes() == b""
    r = run_cli("registry", "rebuild", "-y")
    assert r.exit_code == 0 and "restored 2 record(s)" in r.stdout, r.stderr
    assert sorted((d.label, d.path, d.content_hash) for d in Registry().all(Dataset)) == before
    assert (styler_home / "registry" / "datasets.json.bad").is_file()
    assert run_cli("registry", "verify").stdout.strip() == "registry ok"
    assert run_cli("registry", "prune", "-y").stdout.strip() == "nothing to prune"
    assert tree(styler_home / "datasets") == files
    assert run_cli("registry", "rebuild").stdout.strip() == "every table is healthy; nothing to rebuild"


def test_a_moved_aside_table_makes_prune_refuse_until_rebuilt(styler_home, tmp_path):
    before = _two_datasets(tmp_path)
    table = styler_home / "registry" / "datasets.json"
    table.rename(table.with_name("datasets.json.bad"))  # what the old corruption message said to do
    r = run_cli("registry", "verify", "--json")
    assert r.exit_code == 1
    (p,) = json.loads(r.stdout)
    assert p["kind"] == "missing-table" and "styler registry rebuild" in p["detail"]
    r = run_cli("registry", "prune", "--dry-run")
    assert r.exit_code == 1 and "cannot prune: registry table datasets is missing" in r.stderr
    r = run_cli("registry", "rebuild", "-y")
    assert r.exit_code == 0, r.stderr
    assert sorted((d.label, d.path, d.content_hash) for d in Registry().all(Dataset)) == before
    assert (styler_home / "registry" / "datasets.json.bad").is_file()  # kept as the user left it


def test_rebuild_of_a_table_it_cannot_restore_needs_empty(styler_home):
    Registry().count(Output)
    jobs = styler_home / "registry" / "jobs.json"
    jobs.write_bytes(b"{ broken")
    r = run_cli("registry", "rebuild", "-y")
    assert r.exit_code == 1 and "jobs" in r.stdout and "--empty jobs" in r.stdout
    assert jobs.read_bytes() == b"{ broken"
    r = run_cli("registry", "rebuild", "--empty", "datasets")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    r = run_cli("registry", "rebuild", "--empty", "jobs", "-y")
    assert r.exit_code == 0, r.stderr
    assert (styler_home / "registry" / "jobs.json.bad").read_bytes() == b"{ broken"
    assert run_cli("registry", "verify").stdout.strip() == "registry ok"


@pytest.mark.slow
def test_rebuild_restores_trained_adapters_with_their_ids(styled):
    from registry import Adapter

    from tests.helpers import rebuild_adapters

    before, after = rebuild_adapters(("id", "name", "version", "method", "blob", "base", "run_id", "dataset_id",
                                      "rank", "alpha", "trigger", "targets"))
    assert [a[:-1] + [sorted(a[-1])] for a in after] == [b[:-1] + [sorted(b[-1])] for b in before] and after
    assert run_cli("registry", "verify", "--no-rehash").stdout.strip() == "registry ok"


def test_verify_mentions_temp_files_left_by_killed_writers_and_prune_removes_them(styler_home):
    reg = Registry()
    reg.count(Output)
    old = time.time() - 3600
    for i in range(3):
        p = reg.dir / f".outputs.json.dead{i}.tmp"
        p.write_bytes(b"x" * 4096)
        os.utime(p, (old, old))
    r = run_cli("registry", "verify")
    assert r.exit_code == 0 and r.stdout.strip() == "registry ok"
    assert "3 temp file(s) (12.0 KiB) left in" in r.stderr and "styler registry prune" in r.stderr
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 0 and r.stdout.count("  temp ") == 3 and "freed 12.0 KiB" in r.stdout
    assert list(reg.dir.glob(".*.tmp")) == []
    assert run_cli("registry", "verify").stderr == ""
