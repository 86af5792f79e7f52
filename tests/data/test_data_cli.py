"""`styler data ls|show|rm|verify|synth`."""

import json

from registry import Adapter, Dataset, Registry
from tests.helpers import make_images, run_cli


def test_ls_show_json(styler_home, tmp_path):
    make_images(tmp_path / "src", 3)
    run_cli("data", "add", "calligraphy/mifu", tmp_path / "src", "--prefix", "书法")
    r = run_cli("data", "ls")
    assert r.exit_code == 0 and "calligraphy/mifu" in r.stdout
    listed = json.loads(run_cli("data", "ls", "--json").stdout)
    assert listed[0]["name"] == "calligraphy/mifu" and listed[0]["n_images"] == 3
    r = run_cli("data", "show", "calligraphy/mifu@1", "--samples", "2")
    assert r.exit_code == 0
    assert "书法 永 0" in r.stdout and "[train]" in r.stdout and "sharpness" in r.stdout
    view = json.loads(run_cli("data", "show", "calligraphy/mifu", "--json").stdout)
    assert view["dataset"]["version"] == 1 and len(view["samples"]) == 3


def test_markup_in_captions_prints_literally(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 1)
    (src / "img0.txt").write_text("[bold]not bold[/bold] [link=http://x]y[/link]", "utf-8")
    run_cli("data", "add", "markup", src)
    r = run_cli("data", "show", "markup")
    assert "[bold]not bold[/bold]" in r.stdout and "[link=http://x]y[/link]" in r.stdout


def test_show_unknown_dataset_and_version(styler_home, tmp_path):
    r = run_cli("data", "show", "nothing")
    assert r.exit_code == 1 and "no dataset named 'nothing'" in r.stderr
    make_images(tmp_path / "src", 1)
    run_cli("data", "add", "one", tmp_path / "src")
    r = run_cli("data", "show", "one@4")
    assert r.exit_code == 1 and "it has @1" in r.stderr


def test_rm_one_version_then_all(styler_home, tmp_path):
    make_images(tmp_path / "src", 1)
    for _ in range(3):
        run_cli("data", "add", "multi", tmp_path / "src")
    r = run_cli("data", "rm", "multi@2", "--dry-run")
    assert "would remove multi@2" in r.stdout and len(Registry().versions(Dataset, "multi")) == 3
    assert run_cli("data", "rm", "multi@2", "-y").exit_code == 0
    assert [d.version for d in Registry().versions(Dataset, "multi")] == [1, 3]
    assert not (styler_home / "datasets" / "multi" / "2").exists()
    assert (styler_home / "datasets" / "multi").is_dir()
    assert run_cli("data", "rm", "multi", "-y").exit_code == 0
    assert Registry().versions(Dataset, "multi") == []
    assert not (styler_home / "datasets" / "multi").exists()
    # links use record ids, so a fresh start at @1 cannot be confused with the removed versions
    assert "multi@1" in run_cli("data", "add", "multi", tmp_path / "src").stdout


def test_rm_refuses_a_dataset_adapters_were_trained_on(styler_home, tmp_path):
    make_images(tmp_path / "src", 1)
    run_cli("data", "add", "used", tmp_path / "src")
    d = Registry().resolve(Dataset, "used")
    Registry().insert(Adapter(name="used", version=1, dataset_id=d.id))
    r = run_cli("data", "rm", "used", "-y")
    assert r.exit_code == 2 and "adapter used@1 was trained on it; remove that adapter first" in r.stderr
    assert Registry().resolve(Dataset, "used")


def test_verify_detects_changed_and_missing_files(styler_home, tmp_path):
    make_images(tmp_path / "src", 2)
    run_cli("data", "add", "v", tmp_path / "src")
    assert run_cli("data", "verify").exit_code == 0
    d = Registry().resolve(Dataset, "v")
    imgs = sorted((styler_home / d.path / "images").iterdir())
    imgs[0].write_bytes(b"changed")
    imgs[1].unlink()
    r = run_cli("data", "verify", "v")
    assert r.exit_code == 1 and "changed-file" in r.stdout and "missing-file" in r.stdout
    assert run_cli("registry", "verify").exit_code == 1


def test_synth_registers_a_dataset_for_each_kind(styler_home):
    for kind, word in (("calligraphy", "书法"), ("pixel", "pixel art"), ("watercolor", "watercolor")):
        r = run_cli("data", "synth", f"demo/{kind}", "--kind", kind, "--n", "4", "--seed", "1")
        assert r.exit_code == 0, r.stderr
        d = Registry().resolve(Dataset, f"demo/{kind}")
        assert d.n_images == 4 and d.source.startswith(f"synth:{kind}")
        first = json.loads((styler_home / d.path / "captions.jsonl").read_text("utf-8").splitlines()[0])
        assert word in first["text"]


def test_synth_is_deterministic(styler_home):
    run_cli("data", "synth", "a", "--kind", "pixel", "--n", "3", "--seed", "7")
    run_cli("data", "synth", "b", "--kind", "pixel", "--n", "3", "--seed", "7")
    reg = Registry()
    assert reg.resolve(Dataset, "a").content_hash == reg.resolve(Dataset, "b").content_hash


def test_synth_bad_kind_and_name(styler_home):
    r = run_cli("data", "synth", "x", "--kind", "oil")
    assert r.exit_code == 2 and "calligraphy" in r.stderr
    r = run_cli("data", "synth", "Bad Name")
    assert r.exit_code == 2 and "invalid name" in r.stderr
    assert Registry().all(Dataset) == []
