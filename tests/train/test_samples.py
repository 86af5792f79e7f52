"""A run's sample sheet: written during training (prompts × steps), rebuilt by `styler runs samples`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from registry import BlobStore, Output, Registry, Run
from styler.train.samples import SHEET_KEY, pick_columns, read_sheet_info, sheet_path
from tests.helpers import run_cli


def cell_boxes(sheet: Image.Image, images: list[Image.Image]) -> list[tuple[int, int]]:
    """Where each of `images` (scaled as the sheet scales them) is pasted in the sheet, pixel for
    pixel: (x, y) of its top-left corner."""
    arr = np.asarray(sheet.convert("RGB"))
    found = []
    for im in images:
        cell = np.asarray(im.convert("RGB"))
        h, w = cell.shape[:2]
        cy, cx = h // 2, w // 2  # anchor on the centre pixel, then compare the whole block
        hits = [(int(y) - cy, int(x) - cx) for y, x in np.argwhere((arr == cell[cy, cx]).all(-1))]
        where = [(x, y) for y, x in hits if 0 <= y <= arr.shape[0] - h and 0 <= x <= arr.shape[1] - w
                 and np.array_equal(arr[y:y + h, x:x + w], cell)]
        assert len(where) == 1, f"image found {len(where)} times in the sheet"
        found.append(where[0])
    return found


@pytest.mark.slow
def test_a_validating_run_writes_a_prompts_by_steps_sheet_that_the_cli_rebuilds(checkpointed):
    styler_home = checkpointed  # trained 4 steps, validating every 2 with two prompts (tests/conftest.py)
    run = next(r for r in Registry().all(Run) if r.config.get("validate_every"))
    path = sheet_path(styler_home, run.id)
    info = read_sheet_info(path)
    assert info == {"run_id": run.id, "prompts": ["ink, 书法 永", "a red circle"], "steps": [2, 4], "all_steps": [2, 4]}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # written in one rename: no temp left

    # every validation image is a cell: row = its prompt, column = its step
    outs = {(o.prompt, o.params["train_step"]): o for o in Registry().find(Output, run_id=run.id)}
    sheet = Image.open(path).convert("RGB")
    blobs = BlobStore(styler_home)
    keys = [(p, s) for p in info["prompts"] for s in info["steps"]]
    cells = [Image.open(blobs.path(outs[k].blob)).convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
             for k in keys]
    (x00, y00), (x01, y01), (x10, y10), (x11, y11) = cell_boxes(sheet, cells)
    assert y00 == y01 < y10 == y11 and x00 == x10 < x01 == x11  # 2 rows (prompts) × 2 columns (steps)
    assert sheet.width < 2 * 128 + 200 and sheet.height < 2 * 128 + 150  # 4 cells and their labels, no more

    # rebuilt from the registry (e.g. after it was deleted), and its path printed
    path.unlink()
    r = run_cli("runs", "samples", run.id[-8:])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(path) and "2 prompt(s) × 2 step(s)" in r.stderr
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(sheet))
    r = run_cli("runs", "samples", run.id, "--columns", "1", "--json")
    assert json.loads(r.stdout)["steps"] == [4] and read_sheet_info(path)["steps"] == [4]

    # the dashboard shows it: tests/tui/test_runs_live.py (a sheet with the same text chunk)


def test_samples_of_a_run_without_validation_images_and_of_no_run(styler_home):
    Registry().insert(Run(id="01JR0000000000000000000009", status="completed", config={}))
    before = sorted(p.relative_to(styler_home).as_posix() for p in styler_home.rglob("*"))
    r = run_cli("runs", "samples", "01JR0000000000000000000009")
    assert r.exit_code == 2 and "has no validation images" in r.stderr and "--validate-every" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not sheet_path(styler_home, "01JR0000000000000000000009").exists()
    r = run_cli("runs", "samples", "NOSUCHRUN")
    assert r.exit_code != 0 and "no run with id" in r.stderr and "styler registry ls runs" in r.stderr
    r = run_cli("runs", "samples", "01JR0000000000000000000009", "--columns", "-1")
    assert r.exit_code == 2 and "--columns -1" in r.stderr
    assert sorted(p.relative_to(styler_home).as_posix() for p in styler_home.rglob("*")) == before


def test_pick_columns_keeps_the_first_and_the_latest():
    steps = list(range(100, 4100, 100))
    picked = pick_columns(steps, 5)
    assert picked[0] == 100 and picked[-1] == 4000 and len(picked) == 5
    assert pick_columns(steps, 0) == steps and pick_columns([2, 4], 16) == [2, 4] and pick_columns(steps, 1) == [4000]
    assert SHEET_KEY == "styler.sheet"
