"""`styler eval`, `styler eval probe`, `styler scores`, `styler report` with the tiny CLIP."""

import json

import pytest
from PIL import Image

from registry import Dataset, Output, Registry, Score
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

QUICK = ["--clip", "tiny", "--steps", "2"]


def _scores(name):
    return {s.metric: s for s in Registry().all(Score) if s.subject.get("name") == name}


def test_eval_scores_the_adapter_and_the_baseline_with_their_protocol(styled):
    r = run_cli("eval", "anime", *QUICK, "--n", "6", "--json")
    assert r.exit_code == 0, r.stderr
    assert "not with published CLIP scores" in r.stderr  # the tiny CLIP, the default on the tiny base
    assert json.loads(r.stdout)["protocol"]["clip"]["world"] is True
    data = json.loads(r.stdout)
    assert set(data["scores"]) == {"anime@1", "baseline vs anime@1"}
    mine, base = _scores("anime@1"), _scores("baseline vs anime@1")
    assert {"clip_t", "style_sim", "cmmd"} <= set(mine) and set(mine) == set(base)
    s = mine["style_sim"]
    assert s.subject["kind"] == "adapter" and len(s.output_ids) == 6
    assert s.protocol["clip"]["world"] is True and s.protocol["against"]["name"] == "anime@1"
    assert s.protocol["n"] == 6 and s.protocol["seeds"] == [0, 5]
    outs = [Registry().get(Output, i) for i in s.output_ids]
    assert [o.seed for o in outs] == list(range(6)) and all(o.adapters[0]["name"] == "anime" for o in outs)
    assert all(not Registry().get(Output, i).adapters for i in base["clip_t"].output_ids)
    assert 0 <= mine["clip_t"].value <= 100


def test_eval_reuses_outputs_with_the_same_recipe(styled, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n# a comment\n书法 永\n", encoding="utf-8")
    assert run_cli("eval", "anime", *QUICK, "--n", "3", "--prompts", prompts).exit_code == 0
    n = Registry().count(Output)
    assert run_cli("eval", "anime", *QUICK, "--n", "3", "--prompts", prompts).exit_code == 0
    assert Registry().count(Output) == n
    assert run_cli("eval", "ink", *QUICK, "--n", "3", "--prompts", prompts).exit_code == 0
    assert Registry().count(Output) == n + 3  # same prompts and seeds: the baseline was reused



def test_probe_sweep_chart_shows_every_seed_of_each_cell(styled, tmp_path):
    """The chart has a row of images per seed (up to SHEET_ROWS), not one image per weight: a single
    image can take another path at one weight and make the row look unchanged or jumpy."""
    from styler.eval.sweep import SHEET_ROWS

    heights = {}
    for n in (1, 2, SHEET_ROWS + 1):
        r = run_cli("eval", "probe", "anime", "watercolor", "--sweep", "anime:watercolor", "--n", n, "--steps", "2",
                    "--clip", "tiny", "--out", tmp_path / f"n{n}", "--json")
        assert r.exit_code == 0, r.stderr
        data = json.loads(r.stdout)
        assert [c["t"] for c in data["cells"]] == [0, 0.2, 0.4, 0.5, 0.6, 0.8, 1]
        assert all(len(c["outputs"]) == n for c in data["cells"])
        heights[n] = Image.open(data["chart"]).height
    row = heights[2] - heights[1]
    assert row >= 64  # one more row of images
    assert heights[SHEET_ROWS + 1] == heights[1] + (SHEET_ROWS - 1) * row  # capped at SHEET_ROWS rows

def test_mix_eval_probe_scores_and_reports(styled, tmp_path):
    r = run_cli("eval", "anime=0.5+watercolor=0.5", *QUICK, "--n", "4", "--against", "watercolor")
    assert r.exit_code == 0, r.stderr
    assert "anime@1=0.5+watercolor@1=0.5" in r.stdout
    r = run_cli("eval", "probe", "anime", "watercolor", "--on", "anime@1=0.5+watercolor@1=0.5", "--clip", "tiny", "--json")
    assert r.exit_code == 0, r.stderr
    probe = json.loads(r.stdout)
    assert probe["classes"] == ["anime@1", "watercolor@1"]
    assert sum(probe["mean_probability"].values()) == pytest.approx(1.0, abs=1e-6)
    r = run_cli("scores")
    assert r.exit_code == 0 and "anime@1=0.5+watercolor@1=0.5" in r.stdout and "baseline vs watercolor@1" in r.stdout
    assert "not with published CLIP scores" in r.stderr
    table = json.loads(run_cli("scores", "--json").stdout)
    assert "clip_t" in table["baseline vs watercolor@1"]
    only = json.loads(run_cli("scores", "anime@1=0.5+watercolor@1=0.5", "--json").stdout)
    assert set(only) == {"anime@1=0.5+watercolor@1=0.5", "baseline vs watercolor@1"}
    csv_text = run_cli("scores", "--csv").stdout
    assert csv_text.splitlines()[0].startswith("subject,n,clip_t")
    png, html = tmp_path / "r.png", tmp_path / "r.html"
    assert run_cli("report", "anime@1=0.5+watercolor@1=0.5", "--out", png).exit_code == 0
    assert Image.open(png).width > 100
    assert run_cli("report", "anime@1=0.5+watercolor@1=0.5", "--out", html).exit_code == 0
    assert "data:image/png;base64" in html.read_text()


def test_a_mix_name_resolves_the_same_everywhere(styled, tmp_path):
    # evaluated as typed in README's guide (no versions), then named in other orders and spellings
    r = run_cli("eval", "watercolor=0.5+anime=0.5", *QUICK, "--n", "2", "--against", "watercolor")
    assert r.exit_code == 0, r.stderr
    stored = {s.subject["name"] for s in Registry().all(Score) if s.subject.get("kind") == "mix"}
    assert stored == {"anime@1=0.5+watercolor@1=0.5"}  # one name whatever the order typed
    for spelling in ("anime=0.5+watercolor=0.5", "watercolor=0.5+anime=0.5", "anime@1=0.5+watercolor@1=0.5"):
        r = run_cli("eval", "probe", "anime", "watercolor", "--on", spelling, "--clip", "tiny", "--json")
        assert r.exit_code == 0, (spelling, r.stderr)
        assert json.loads(r.stdout)["target"] == "anime@1=0.5+watercolor@1=0.5"
        only = json.loads(run_cli("scores", spelling, "--json").stdout)
        assert set(only) == {"anime@1=0.5+watercolor@1=0.5", "baseline vs watercolor@1"}, spelling
        r = run_cli("report", spelling, "--out", tmp_path / "r.png")
        assert r.exit_code == 0, (spelling, r.stderr)
    # other weights are another mix: not found, with the command that makes it
    r = run_cli("report", "anime=0.4+watercolor=0.6", "--out", tmp_path / "r.png")
    assert r.exit_code == 2 and "styler eval anime=0.4+watercolor=0.6" in r.stderr


def test_every_eval_is_kept_the_table_shows_n_and_stacks_when_narrow(styled):
    from styler.cli.common import out

    assert run_cli("eval", "anime", *QUICK, "--n", "4").exit_code == 0
    assert run_cli("eval", "anime", *QUICK, "--n", "2", "--metrics", "clip_t").exit_code == 0
    table = run_cli("scores", "anime", "--csv").stdout.splitlines()
    head, row = table[0].split(","), next(line for line in table if line.startswith("anime@1,")).split(",")
    assert head[:2] == ["subject", "n"] and row[1] == "2/4"  # clip_t from the n=2 eval, the rest from n=4
    history = json.loads(run_cli("scores", "anime", "--all", "--json").stdout)
    mine = [h for h in history if h["subject"] == "anime@1"]
    assert [h["n"] for h in mine] == [4, 2]  # both evals kept, oldest first
    assert set(mine[1]["scores"]) == {"clip_t"} and "style_sim" in mine[0]["scores"]
    old = out.width
    for width in (80, 40):  # 40: too narrow for the table, so one block per subject
        try:
            out.width = width
            text = run_cli("scores").stdout
        finally:
            out.width = old
        assert all(len(line) <= width for line in text.splitlines()), text
        for m in ("clip_t", "style_sim", "cmmd"):  # never cut to `cli…`
            assert m in text
        assert "…" not in text
    assert "\n  style_sim ↑" in text and "anime@1  n 2/4" in text


def test_transfer_scores_content_sim_ssim_and_style_strength(styled, tmp_path):
    import numpy as np

    folder = tmp_path / "content"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    r = run_cli("eval", "watercolor", *QUICK[:2], "--steps", "10", "--content", folder, "--strength", "0.8", "--json")
    assert r.exit_code == 0, r.stderr
    scores = json.loads(r.stdout)["scores"]
    assert set(scores["watercolor@1"]) == {"content_sim", "ssim", "style_strength"}
    assert set(scores["baseline (transfer)"]) == {"content_sim", "ssim"}
    mine = _scores("watercolor@1")
    assert mine["style_strength"].value == pytest.approx(
        (1 - mine["content_sim"].value) / (1 - _scores("baseline (transfer)")["content_sim"].value))
    outs = [Registry().get(Output, i) for i in mine["ssim"].output_ids]
    assert all(o.kind == "img2img" and o.content_blob for o in outs)
    n = Registry().count(Output)
    assert run_cli("eval", "watercolor", *QUICK[:2], "--steps", "10", "--content", folder, "--strength", "0.8").exit_code == 0
    assert Registry().count(Output) == n  # transfers reused by recipe (content and strength included)
    r = run_cli("eval", "watercolor", "--clip", "tiny", "--content", tmp_path / "nothing-here")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_the_best_per_column_is_highlighted(styled):
    run_cli("eval", "anime", *QUICK, "--n", "3", "--metrics", "clip_t")
    from styler.eval.table import best, latest_scores

    rows = latest_scores(Registry())
    winner = best(rows, "clip_t")
    assert winner in rows and rows[winner]["clip_t"].value == max(r["clip_t"].value for r in rows.values())


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["eval", "anime", *QUICK, "--metrics", "fid", "--n", "1"], 2, "fid needs at least"),
        (["eval", "anime", *QUICK, "--metrics", "sharpness"], 2, "clip_t"),
        (["eval", "nope", *QUICK], 1, "no adapter named 'nope'"),
        (["eval", "anime=0.5+ink=0.5", *QUICK, "--metrics", "style_sim"], 2, "--against"),
        (["eval", "probe", "anime", "--on", "anime", "--clip", "tiny"], 2, "at least two datasets"),
        (["eval", "probe", "anime", "ink", "--on", "never-evaluated", "--clip", "tiny"], 2, "run `styler eval never-evaluated`"),
        (["report", "anime", "--out", "x.pdf"], 2, ".png or .html"),
        (["report", "ghost", "--out", "x.png"], 2, "no scores for ghost"),
    ],
)
def test_bad_input(styled, args, code, fragment):
    before = Registry().count(Score)
    r = run_cli(*args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert fragment in r.stderr
    assert Registry().count(Score) == before


def test_a_reference_dataset_without_usable_images(styled):
    d = Registry().resolve(Dataset, "ink")
    for f in (styled / d.path / "images").iterdir():
        f.unlink()
    r = run_cli("eval", "anime", *QUICK, "--against", "ink", "--n", "2")
    assert r.exit_code == 2 and "ink@1" in r.stderr


def test_nan_features_are_refused(styled, monkeypatch):
    import torch

    from styler.eval import features

    real = features.ClipFeatures.image_embeddings

    def broken(self, images, keys=None):
        out = real(self, images, keys=None)
        return out * torch.nan

    monkeypatch.setattr(features.ClipFeatures, "image_embeddings", broken)
    r = run_cli("eval", "anime", *QUICK, "--n", "2")
    assert r.exit_code != 0 and "NaN" in r.stderr


def test_metric_minimums_are_checked_before_anything_renders(styled):
    from registry import Output

    # fid needs more images per side than the tiny CLIP's 64 dimensions: refused, nothing rendered
    r = run_cli("eval", "anime", *QUICK, "--metrics", "fid,clip_t", "--n", "8")
    assert r.exit_code == 2, r.stderr
    assert "fid needs at least 65 images per side, --n 8 is fewer; raise --n" in r.stderr
    assert Registry().count(Output) == 0 and Registry().count(Score) == 0
    # by default, the ones that do not fit are skipped with one warning, before rendering
    r = run_cli("eval", "anime", *QUICK, "--n", "3", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("skipped fid (needs 65), kid (needs 10)") == 1
    assert r.stderr.count("cmmd from only 3 images") == 1  # each caution once, not per subject or metric
    scores = json.loads(r.stdout)
    assert set(next(iter(scores["scores"].values()))) == {"clip_t", "style_sim", "cmmd"}
    assert scores["protocol"]["n"] == 3 and scores["protocol"]["against"]["n"] == 4
    assert all(s.protocol["n"] == 3 for s in Registry().all(Score))


def test_the_tiny_clip_is_the_default_for_adapters_of_the_tiny_base(styled):
    # no --clip, no STYLER_CLIP, no clip in config.toml: adapters of the tiny base get the tiny CLIP
    r = run_cli("eval", "anime", "--steps", "2", "--n", "2", "--metrics", "clip_t", "--json")
    assert r.exit_code == 0, r.stderr
    clip = json.loads(r.stdout)["protocol"]["clip"]
    assert clip["name"] == "clip-tiny" and clip["world"] is True


def test_eval_and_the_probe_sweep_render_with_the_sampler_asked_for(styled, tmp_path):
    """`--scheduler` (the names of `styler generate`) reaches every image and the protocol; the
    sweep also takes `--guidance`. Another sampler is another recipe: nothing is reused across."""
    assert run_cli("eval", "anime", *QUICK, "--n", "2").exit_code == 0
    ddim = {o.id for o in Registry().all(Output)}
    r = run_cli("eval", "anime", *QUICK, "--n", "2", "--scheduler", "euler-a", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["protocol"]["scheduler"] == "euler-a"
    new = [o for o in Registry().all(Output) if o.id not in ddim]
    assert len(new) == 4 and {o.scheduler for o in new} == {"euler-a"}  # the adapter's 2 and the baseline's 2
    assert {s.protocol["scheduler"] for s in _scores("anime@1").values()} == {"euler-a"}
    old = {(o.prompt, o.seed, bool(o.adapters)): o.blob for o in Registry().all(Output) if o.id in ddim}
    assert any(old[(o.prompt, o.seed, bool(o.adapters))] != o.blob for o in new)  # other pictures
    before = Registry().count(Output)
    r = run_cli("eval", "probe", "anime", "watercolor", "--sweep", "anime:watercolor", "--n", "1", "--steps", "2",
                "--scheduler", "euler", "--guidance", "3", "--clip", "tiny", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert (data["scheduler"], data["guidance"], data["steps"]) == ("euler", 3.0, 2)
    outs = [Registry().get(Output, i) for c in data["cells"] for i in c["outputs"]]
    assert len(outs) == 7 and {(o.scheduler, o.guidance) for o in outs} == {("euler", 3.0)}
    assert Registry().count(Output) == before + 7


@pytest.mark.parametrize("args", [
    ["eval", "anime", *QUICK, "--n", "2", "--scheduler", "k_euler"],
    ["eval", "anime", *QUICK, "--content", "nowhere.png", "--scheduler", "k_euler"],
    ["eval", "probe", "anime", "watercolor", "--sweep", "anime:watercolor", "--n", "1", "--steps", "2",
     "--clip", "tiny", "--scheduler", "k_euler"],
])
def test_an_unknown_sampler_is_refused_before_anything_renders(styled, args):
    r = run_cli(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    line = r.stderr.strip().splitlines()[-1]
    assert line == "error: unknown --scheduler 'k_euler'; use one of ddim, euler, euler-a, dpm++, dpm++-karras, " \
                   "unipc, pndm, ddpm", r.stderr
    assert Registry().count(Output) == 0 and Registry().count(Score) == 0
