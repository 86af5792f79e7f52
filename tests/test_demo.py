"""`styler demo`: the whole workflow, then a second run that reuses it, then --fresh."""

from pathlib import Path

import pytest
from PIL import Image

from registry import Adapter, Dataset, Output, Registry, Score
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


def test_demo_runs_reuses_and_starts_fresh(tiny_home, monkeypatch):
    from styler import demo

    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda **kw: real(train_steps=3, eval_n=2, gen_steps=2, sweep_n=1, **kw))
    r = run_cli("demo")
    assert r.exit_code == 0, r.stderr
    assert "demo done" in r.stdout and "styler tui" in r.stdout
    reg = Registry()
    assert sorted(a.name for a in reg.all(Adapter)) == ["demo/calligraphy", "demo/pixel", "demo/watercolor"]
    assert sorted(d.name for d in reg.all(Dataset)) == ["demo/calligraphy", "demo/pixel", "demo/plain", "demo/watercolor"]
    assert all(d.source.startswith("synth:world-") for d in reg.all(Dataset))
    assert "what each LoRA learned" in r.stdout and "probe: own style" in r.stdout
    assert "Spearman" in r.stdout and "not with published CLIP scores" in r.stdout
    pngs = list((tiny_home / "demo" / "images").glob("*.png"))
    assert len(pngs) == 12 and "parameters" in Image.open(pngs[0]).info  # 3 styles × (baseline, adapter) × 2
    sweep = next(line.split()[-1] for line in r.stdout.splitlines() if "probe sweep" in line)
    assert Image.open(sweep).width > 7 * 64 and Image.open(sweep).height > 220  # the strip over the chart
    report = Path(next(line.split()[-1] for line in r.stdout.splitlines() if line.strip().startswith("report")))
    assert "data:image/png;base64" in report.read_text()
    assert {s.subject["name"] for s in reg.all(Score)} >= {"demo/pixel@1", "baseline vs demo/pixel@1"}

    outputs, adapters = reg.count(Output), len(reg.all(Adapter))
    r = run_cli("demo")
    assert r.exit_code == 0 and "reused" in r.stdout
    assert reg.count(Output) == outputs and len(reg.all(Adapter)) == adapters

    assert "the probe's share for demo/pixel@1" in r.stdout  # the sweep runs pixel art -> watercolor

    # a home whose demo records came from an earlier demo (no recipe in its state): made again
    import json

    state = tiny_home / "demo" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "recipe"}))
    r = run_cli("demo")
    assert r.exit_code == 0, r.stderr
    assert "made by an earlier version of the demo" in r.stdout + r.stderr and "reused" not in r.stdout
    assert json.loads(state.read_text())["recipe"] == demo.RECIPE

    r = run_cli("demo", "--fresh")
    assert r.exit_code == 0, r.stderr
    assert [a.version for a in reg.all(Adapter)] == [1, 1, 1]  # removed, then made again
    assert "reused" not in r.stdout


def test_demo_records_of_an_earlier_tiny_base_or_older_datasets_are_stale(styler_home):
    from styler.demo import _stale

    reg = Registry()
    now = {"name": "tiny", "kind": "tiny", "hash": "a" * 64}
    assert not _stale(reg, now)
    reg.insert(Dataset(name="demo/pixel", version=1, path="datasets/demo/pixel/1", source="synth:world-pixel n=24"))
    reg.insert(Adapter(name="demo/pixel", version=1, base=dict(now)))
    assert not _stale(reg, now)
    # an adapter trained on tiny v1 (random weights, other layer sizes): start over
    assert _stale(reg, {**now, "hash": "b" * 64})
    # a dataset from before the world (the sprite/flower/character generators): start over
    reg.insert(Dataset(name="demo/watercolor", version=1, path="datasets/demo/watercolor/1", source="synth:watercolor n=12"))
    assert _stale(reg, now)
