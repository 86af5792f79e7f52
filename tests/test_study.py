"""`styler study`: a grid of queued training runs that a worker trains and then renders into one
labelled sheet and one scores table; bad axes are one line, exit 2, and queue nothing."""

import csv
import json

import pytest

from registry import Adapter, Job, Registry, Run, Score
from styler.worker import run_worker
from tests.helpers import run_cli, tree

TRAIN = ["--base", "tiny", "--resolution", "32", "--steps", "2", "--rank", "2"]


@pytest.fixture
def anime(tiny_home):
    from styler.data.library import synth_dataset

    synth_dataset("anime", kind="pixel", n=4, size=32, seed=0)
    return "anime"


@pytest.mark.slow
def test_a_2x1_study_trains_two_runs_then_one_sheet_and_one_table(anime, styler_home, monkeypatch):
    import styler.generate.grid as grid

    r = run_cli("study", anime, "--grid", "lr=1e-2,5e-2", *TRAIN, "--name", "s", "--prompt", "a cat",
                "--seed", "3", "--render-steps", "2", "--size", "32")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "s"
    reg = Registry()
    jobs = reg.all(Job)
    assert [j.kind for j in jobs] == ["train", "train", "study"]
    assert jobs[2].after == [jobs[0].id, jobs[1].id]
    assert [j.payload["config"]["lr"] for j in jobs[:2]] == [1e-2, 5e-2]
    assert {j.payload["config"]["name"] for j in jobs[:2]} == {"s/lr-1e-2", "s/lr-5e-2"}

    r = run_cli("study", "render", "s")  # nothing trained yet: one line, exit 1, nothing written
    assert r.exit_code == 1 and "study s: 2 of 2 cells are still queued or training" in r.stderr, r.stderr
    assert not (styler_home / "studies" / "s" / "sheet.png").exists()

    drawn = {}
    real = grid.make_grid

    def recording(images, **kw):
        drawn.update(kw, images=images)
        return real(images, **kw)

    monkeypatch.setattr(grid, "make_grid", recording)
    for _ in range(3):  # two trainings, then the follow-up job that waited for them
        assert run_worker(once=True, log=lambda m: None) == 0
    jobs = [reg.get(Job, j.id) for j in jobs]
    assert [j.status for j in jobs] == ["done"] * 3, [j.error for j in jobs]
    runs = reg.all(Run)
    assert len(runs) == 2 and {r.status for r in runs} == {"completed"}
    assert sorted(r.config["lr"] for r in runs) == [1e-2, 5e-2]

    # one sheet: two cells, labelled by the axis, each the cell's own image
    assert drawn["col_labels"] == ["lr 1e-2", "lr 5e-2"] and drawn["x_name"] == "lr" and drawn["row_labels"] is None
    cells = drawn["images"]
    assert len(cells) == 1 and len(cells[0]) == 2 and all(c is not None for c in cells[0])
    assert cells[0][0].tobytes() != cells[0][1].tobytes()  # the two learning rates drew different images
    sheet = styler_home / "studies" / "s" / "sheet.png"
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.width > 2 * 128  # two cells of at least 128 px side by side

    # one table: a row per cell with its adapter and scores, the same scores the registry holds
    with open(styler_home / "studies" / "s" / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["lr"], row["adapter"], row["status"]) for row in rows] == [
        ("1e-2", "s/lr-1e-2@1", "trained"), ("5e-2", "s/lr-5e-2@1", "trained")]
    for row in rows:
        adapter = reg.resolve(Adapter, row["adapter"])
        scores = {s.metric: s.value for s in reg.all(Score) if s.subject.get("id") == adapter.id}
        assert set(scores) == {"clip_t", "style_sim"}
        assert float(row["clip_t"]) == pytest.approx(scores["clip_t"])
        assert float(row["style_sim"]) == pytest.approx(scores["style_sim"])
    study = json.loads((styler_home / "studies" / "s" / "study.json").read_text())
    assert study["rendered"]["prompts"] == ["a cat"] and study["rendered"]["seeds"] == [3]

    r = run_cli("study", "show", "s")
    assert r.exit_code == 0, r.stderr
    assert "s/lr-1e-2@1" in r.stdout and "s/lr-5e-2@1" in r.stdout and str(sheet) in r.stdout.replace("\n", "")
    r = run_cli("study", "ls")
    assert r.exit_code == 0 and "2/2 trained" in r.stdout and "rendered" in r.stdout


def test_bad_study_axes_are_one_line_exit_2_and_queue_nothing(anime, styler_home):
    cases = (
        (["--grid", "learning=1e-4,3e-4"], "--grid 'learning=1e-4,3e-4': 'learning' is not a training option a study can sweep; use one of lr, lr-text,"),
        (["--grid", "lr"], "--grid 'lr': use OPTION=v1,v2,…"),
        (["--grid", "lr=1e-4,fast"], "--grid lr: 'fast' is not a number"),
        (["--grid", "rank=4,8.5"], "--grid rank: '8.5' is not a number; the values of rank are whole numbers"),
        (["--grid", "lr="], "--grid lr has no values"),
        (["--grid", "lr=1e-4,1e-4"], "--grid lr lists '1e-4' twice"),
        (["--grid", "lr=1e-4", "--grid", "lr=3e-4"], "--grid lr is given twice"),
        (["--grid", "lr=1", "--grid", "rank=2", "--grid", "steps=3"], "a study has one or two --grid axes"),
        (["--grid", "lr=1e-4,3e-4", "--lr", "1e-3"], "--lr and --grid lr: give the option once"),
        (["--grid", "warmup=0,-1"], "study cell warmup=-1: --warmup must be >= 0"),
        (["--grid", "text-encoder=yes,maybe"], "--grid text-encoder: 'maybe' is not true or false"),
        ([], "a study needs at least one --grid"),
        (["--grid", "lr=1e-4", "--name", "a/b"], "study name 'a/b': use one part without '/'"),
    )
    for extra, message in cases:
        r = run_cli("study", anime, *TRAIN, *extra)
        assert r.exit_code == 2, (extra, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, r.stderr)
    r = run_cli("study", "nosuch", "--grid", "lr=1e-4")
    assert r.exit_code == 1 and r.stderr.startswith("error: no dataset named 'nosuch'"), r.stderr
    reg = Registry()
    assert reg.count(Job) == 0 and tree(styler_home / "studies") == []

    assert run_cli("study", anime, *TRAIN, "--grid", "lr=1e-4", "--name", "s").exit_code == 0
    before = (reg.count(Job), (styler_home / "studies" / "s" / "study.json").read_text())
    r = run_cli("study", anime, *TRAIN, "--grid", "lr=3e-4", "--name", "s")
    assert r.exit_code == 2 and "a study named 's' exists; choose another --name" in r.stderr
    assert (reg.count(Job), (styler_home / "studies" / "s" / "study.json").read_text()) == before
    r = run_cli("study", "show", "nope")
    assert r.exit_code == 2 and r.stderr.strip() == "error: no study named 'nope'; see `styler study ls`"
