"""`styler registry ls|show|verify|prune`."""

import json
import os
import time

from registry import BlobStore, Dataset, Output, Registry
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
