"""`styler doctor`: versions, devices, home, base, CLIP and known-bad combinations; always exit 0."""

from __future__ import annotations

import json

from styler.doctor import known_bad
from tests.helpers import run_cli, tree


def test_doctor_reports_versions_devices_home_base_and_clip(styler_home):
    r = run_cli("doctor", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    for pkg in ("styler", "torch", "diffusers", "transformers", "peft", "accelerate"):
        assert d["versions"][pkg], pkg
    assert d["torch"]["cuda"] is False and d["torch"]["gpus"] == [] and d["torch"]["mps"] is False
    assert d["placement"] == {"device": "cpu", "dtype": "fp32"}
    assert d["home"] == str(styler_home)
    assert d["base"]["name"] == "tiny" and "built on first use" in d["base"]["detail"]
    assert "not configured" in d["clip"]["detail"]
    assert "bitsandbytes" in d and isinstance(d["nvml"], bool)
    assert tree(styler_home) == []  # it reads; it builds nothing
    text = run_cli("doctor")
    assert text.exit_code == 0
    for word in ("versions", "CUDA", "MPS", "styler runs on  cpu fp32", "home", "base  tiny", "clip"):
        assert word in text.stdout, word


def test_doctor_warns_and_still_exits_0(styler_home, monkeypatch):
    monkeypatch.setenv("STYLER_DEVICE", "cuda")
    monkeypatch.setenv("STYLER_BASE", str(styler_home / "nowhere"))
    r = run_cli("doctor")
    assert r.exit_code == 0
    assert "STYLER_DEVICE=cuda: torch" in r.stdout and "sees no CUDA GPU here" in r.stdout
    assert "base model: base model" in r.stdout and "not found" in r.stdout


def test_known_bad_combinations():
    ok = {"transformers": "5.23.0", "peft": "0.21.2", "diffusers": "0.42.1", "torch": "2.13.0+cpu"}
    assert known_bad(ok) == []
    (line,) = known_bad({**ok, "transformers": "5.24.0"})
    assert "transformers >= 5.24 needs peft >= 0.22" in line and "fix: pip install 'transformers<5.24'" in line
    assert known_bad({**ok, "transformers": "5.24.0", "peft": "0.22.0"}) == []
    assert any("diffusers < 0.41" in w for w in known_bad({**ok, "diffusers": "0.40.0"}))
    assert any("transformers < 5.6" in w for w in known_bad({**ok, "transformers": "4.57.1"}))
    assert any("peft < 0.20" in w for w in known_bad({**ok, "peft": "0.17.1"}))


def test_known_bad_lines_follow_pyproject_floors():
    """doctor starts warning just below each floor pyproject.toml sets for diffusers/transformers/peft."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    ok = {"transformers": "5.23.0", "peft": "0.21.2", "diffusers": "0.42.1", "torch": "2.13.0"}
    for pkg in ("diffusers", "transformers", "peft"):
        major, minor = map(int, re.search(rf'"{pkg}>=(\d+)\.(\d+)', text).groups())
        below = f"{major}.{minor - 1}.99" if minor else f"{major - 1}.99.0"
        assert known_bad({**ok, pkg: f"{major}.{minor}.0"}) == [], pkg
        assert len(known_bad({**ok, pkg: below})) == 1, (pkg, below)
