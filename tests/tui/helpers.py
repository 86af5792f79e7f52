"""Helpers for the dashboard tests: a home with fixed ids and timestamps (so screens are
deterministic), letting the app settle, and reading the screen as text."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image
from rich.console import Console

from registry import Adapter, BlobStore, Dataset, Job, Output, Registry, Run, Score

AT = "2025-01-02T03:04:05.000+00:00"
MARKUP_PROMPT = "[bold]x[/bold] [link=http://a]y[/link]"


def fixed_id(kind: str, n: int) -> str:
    """A 26-character ULID-shaped id that sorts by (kind, n): 01J + kind letter + zeros + n."""
    return f"01J{kind}{n:022d}"


DS_ANIME, DS_INK = fixed_id("D", 1), fixed_id("D", 2)
RUN_ANIME, RUN_INK, RUN_LIVE, RUN_STOPPED = fixed_id("R", 1), fixed_id("R", 2), fixed_id("R", 3), fixed_id("R", 4)
AD_ANIME, AD_INK = fixed_id("A", 1), fixed_id("A", 2)
OUT_MIX, OUT_BASE, OUT_VAL = fixed_id("B", 2), fixed_id("B", 1), fixed_id("B", 0)
VAL_SEED = 3886561766  # a seed as wide as a real one
JOB_DONE, JOB_FAILED = fixed_id("J", 1), fixed_id("J", 2)


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    im = Image.new("RGB", (size, size), color)
    for x in range(size):  # a diagonal, so the preview is not one flat colour
        im.putpixel((x, x), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def metrics_row(step: int, loss: float, **extra) -> str:
    row = {"step": step, "loss": loss, "lr": 1e-4, "epoch": 0, "time": 1000.0 + step, "step_s": 0.5, **extra}
    return json.dumps(row) + "\n"


ANIME_CAPTIONS = ("anm, pixel art, a green fox", "anm, pixel art, a red house on a hill",
                  "anm, pixel art, a blue monster", "anm, a pink tree")


def write_dataset_files(folder: Path, captions) -> None:
    """A managed dataset version's files (images, captions.jsonl, manifest.json), as data add writes them."""
    import hashlib

    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, text in enumerate(captions, 1):
        data = png_bytes((40 * i, 90, 160))
        (folder / "images" / f"{i:05d}.png").write_bytes(data)
        entries.append({"file": f"{i:05d}.png", "sha256": hashlib.sha256(data).hexdigest(), "source": f"img{i}.png",
                        "text": text, "width": 16, "height": 16, "orig_width": 16, "orig_height": 16,
                        "sharpness": 100.0, "split": "val" if i == 1 else "train"})
    (folder / "captions.jsonl").write_text("".join(
        json.dumps({"file": e["file"], "text": e["text"], "split": e["split"]}) + "\n" for e in entries), "utf-8")
    (folder / "manifest.json").write_text(json.dumps({"name": folder.parent.name, "images": entries,
                                                      "options": {"trigger": "anm"}, "missing_captions": []}), "utf-8")


def build_fixed_home(home: Path) -> Registry:
    """Two datasets, two adapters with their runs, a live run, an interrupted one, three outputs (one with a
    markup-laden prompt, one a validation image of a run), scores from the tiny CLIP and two finished jobs — all with fixed ids."""
    reg = Registry(home)
    blobs = BlobStore(home)
    reg.insert(Dataset(id=DS_ANIME, created_at=AT, name="anime", version=1, path="datasets/anime/1", n_images=4,
                       n_train=3, n_val=1, source="synth:pixel n=4", caption_from="txt", trigger="anm",
                       content_hash="ab" * 32))
    reg.insert(Dataset(id=DS_INK, created_at=AT, name="calligraphy/ink", version=2, path="datasets/calligraphy/ink/2",
                       n_images=6, n_train=6, source="./ink", caption_from="txt", content_hash="cd" * 32))
    reg.insert(Run(id=RUN_ANIME, created_at=AT, started_at=AT, finished_at=AT, dataset_id=DS_ANIME, status="completed",
                   step=5, total_steps=5, loss=0.25, adapter_id=AD_ANIME, config={"rank": 4, "lr": 1e-4, "resolution": 32}))
    reg.insert(Run(id=RUN_INK, created_at=AT, started_at=AT, dataset_id=DS_INK, status="failed", step=3, total_steps=8,
                   loss=0.5, error="loss became NaN at step 4", config={"rank": 8}))
    reg.insert(Run(id=RUN_LIVE, created_at=AT, started_at=AT, dataset_id=DS_INK, status="running", step=2,
                   total_steps=10, loss=0.9, config={"rank": 8}))
    reg.insert(Run(id=RUN_STOPPED, created_at=AT, started_at=AT, dataset_id=DS_ANIME, status="interrupted", step=4,
                   total_steps=10, loss=0.6, config={"rank": 4}))
    reg.insert(Adapter(id=AD_ANIME, created_at=AT, name="anime", version=1, blob="ee" * 32, run_id=RUN_ANIME,
                       dataset_id=DS_ANIME, rank=4, alpha=4.0, targets=["to_q", "to_v"], trigger="anm",
                       base={"name": "tiny", "kind": "tiny"}))
    reg.insert(Adapter(id=AD_INK, created_at=AT, name="calligraphy/ink", version=1, method="imported", blob="ff" * 32,
                       rank=8, alpha=8.0, base={"name": "tiny", "kind": "tiny"}))
    mix = [{"id": AD_ANIME, "name": "anime", "version": 1, "method": "lora", "weight": 0.5, "te_weight": 0.5},
           {"id": AD_INK, "name": "calligraphy/ink", "version": 1, "method": "imported", "weight": 0.75,
            "te_weight": 0.25}]
    reg.insert(Output(id=OUT_VAL, created_at=AT, blob=blobs.put_bytes(png_bytes((90, 160, 60))), kind="validation",
                      prompt="anm, a fox", seed=VAL_SEED, steps=2, guidance=7.5, width=16, height=16, scheduler="DDIM",
                      base={"name": "tiny", "kind": "tiny"}, run_id=RUN_ANIME, params={"train_step": 5}))
    reg.insert(Output(id=OUT_BASE, created_at=AT, blob=blobs.put_bytes(png_bytes((40, 80, 160))), prompt="a quiet lake",
                      seed=3, steps=2, guidance=7.5, width=16, height=16, scheduler="ddim",
                      base={"name": "tiny", "kind": "tiny"}))
    reg.insert(Output(id=OUT_MIX, created_at=AT, blob=blobs.put_bytes(png_bytes((200, 60, 40))), prompt=MARKUP_PROMPT,
                      negative="[red]blurry[/red]", seed=7, steps=2, guidance=7.5, width=16, height=16,
                      scheduler="ddim", base={"name": "tiny", "kind": "tiny"}, adapters=mix))
    clip = {"clip": {"name": "clip-tiny", "hash": "0" * 8, "meaningful": True, "world": True}}
    for metric, ours, base in (("clip_t", 0.31, 0.29), ("style_sim", 0.8, 0.5), ("fid", 12.0, 20.0)):
        reg.insert(Score(id=fixed_id("S", len(metric) * 10 + 1), created_at=AT, metric=metric, value=ours,
                         subject={"kind": "adapter", "name": "anime@1", "id": AD_ANIME}, protocol=clip))
        reg.insert(Score(id=fixed_id("S", len(metric) * 10 + 2), created_at=AT, metric=metric, value=base,
                         subject={"kind": "baseline", "name": "baseline"}, protocol=clip))
    reg.insert(Job(id=JOB_DONE, created_at=AT, kind="eval", payload={"subject": "anime@1", "n": 2, "clip": "tiny"},
                   status="done", attempts=1))
    reg.insert(Job(id=JOB_FAILED, created_at=AT, kind="generate", status="failed", attempts=2,
                   payload={"prompt": MARKUP_PROMPT, "adapters": [["anime@1", 0.5, None]], "n": 1, "seed": 1, "steps": 2},
                   error="[red]boom[/red] adapter missing"))
    write_dataset_files(home / "datasets" / "anime" / "1", ANIME_CAPTIONS)
    for run_id, rows in ((RUN_ANIME, [(1, 0.9), (2, 0.7), (3, 0.5), (4, 0.35), (5, 0.25)]),
                         (RUN_LIVE, [(1, 1.1), (2, 0.9)])):
        folder = home / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.jsonl").write_text("".join(metrics_row(s, v) for s, v in rows))
    write_fixed_sheet(home / "runs" / RUN_ANIME / "samples" / "sheet.png", prompts=["anm, a fox", "anm, 书法 永"],
                      steps=[1, 3, 5])
    return reg


def write_fixed_sheet(path: Path, *, prompts: list[str], steps: list[int], cell: int = 8) -> Path:
    """A stand-in sample sheet (coloured cells on white, no text: fonts differ between machines) with
    the text chunk styler.train.samples writes, so screens stay the same everywhere."""
    from PIL import PngImagePlugin

    from styler.train.samples import SHEET_KEY

    gap = 2
    im = Image.new("RGB", (len(steps) * (cell + gap) + gap, len(prompts) * (cell + gap) + gap), (255, 255, 255))
    for r in range(len(prompts)):
        for c in range(len(steps)):
            shade = 60 + 60 * c
            im.paste((shade, 200 - 80 * r, 255 - shade), (gap + c * (cell + gap), gap + r * (cell + gap),
                                                          gap + c * (cell + gap) + cell, gap + r * (cell + gap) + cell))
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SHEET_KEY, json.dumps({"run_id": path.parent.parent.name, "prompts": prompts, "steps": steps,
                                         "all_steps": steps}, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, pnginfo=info)
    return path


def make_app(home, **kwargs):
    from styler.tui.app import StylerApp

    app = StylerApp(home, **kwargs)
    app.sub_title = "HOME"  # the temp path differs per run; screens must not
    app.animation_level = "none"
    return app


async def settle(pilot, rounds: int = 3) -> None:
    """Let background reads finish and their messages be handled (loads start detail loads)."""
    from textual.worker import WorkerFailed

    for _ in range(rounds):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerFailed:
            pass  # the app reports it (tests check the notification)
        await pilot.pause()


async def stable_screen(pilot, agree: int = 3, tries: int = 40) -> str:
    """The screen once `agree` captures 0.1 s apart are the same: focus moves, the footer's
    recompose and late messages all settle first, even on a loaded machine."""
    await settle(pilot)
    previous, same = screen_text(pilot.app), 1
    for _ in range(tries):
        await pilot.pause(0.1)
        await settle(pilot, rounds=1)
        now = screen_text(pilot.app)
        same = same + 1 if now == previous else 1
        if same >= agree:
            return now
        previous = now
    return previous


def screen_text(app) -> str:
    """The current screen as plain text, one line per row, trailing spaces removed."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True,
                      color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def cell_texts(table) -> list[list[str]]:
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)] for i in range(table.row_count)]
