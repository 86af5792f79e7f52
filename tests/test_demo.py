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
    monkeypatch.setattr(demo, "run_demo", lambda **kw: real(train_steps=3, eval_n=2, gen_steps=2, **kw))
    r = run_cli("demo")
    assert r.exit_code == 0, r.stderr
    assert "demo done" in r.stdout and "styler tui" in r.stdout
    reg = Registry()
    assert sorted(a.name for a in reg.all(Adapter)) == ["demo/calligraphy", "demo/pixel", "demo/watercolor"]
    assert len(reg.all(Dataset)) == 3
    pngs = list((tiny_home / "demo" / "images").glob("*.png"))
    assert len(pngs) == 12 and "parameters" in Image.open(pngs[0]).info  # 3 styles × (baseline, adapter) × 2
    sweep = next(line.split()[-1] for line in r.stdout.splitlines() if "mix sweep" in line)
    assert Image.open(sweep).width > 7 * 64
    report = Path(next(line.split()[-1] for line in r.stdout.splitlines() if line.strip().startswith("report")))
    assert "data:image/png;base64" in report.read_text()
    assert {s.subject["name"] for s in reg.all(Score)} >= {"demo/pixel@1", "baseline vs demo/pixel@1"}

    outputs, adapters = reg.count(Output), len(reg.all(Adapter))
    r = run_cli("demo")
    assert r.exit_code == 0 and "reused" in r.stdout
    assert reg.count(Output) == outputs and len(reg.all(Adapter)) == adapters

    r = run_cli("demo", "--fresh")
    assert r.exit_code == 0, r.stderr
    assert [a.version for a in reg.all(Adapter)] == [1, 1, 1]  # removed, then made again
    assert "reused" not in r.stdout
