"""`styler demo`: the whole workflow on the built-in tiny base, offline, on a CPU, in about a
minute — datasets, LoRA training, baseline and adapter images, a mixed sweep, scores, a report.
Running it again reuses what exists; `fresh=True` removes the demo's records first."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry import Adapter, Dataset, Output, Registry, Run, Score

NS = "demo"
STYLES = {  # kind -> (trigger, prompt used for the demo images)
    "calligraphy": ("mifu", "mifu, 书法 永"),
    "pixel": ("pxl", "pxl, pixel art, a red mushroom"),
    "watercolor": ("wtrc", "wtrc, watercolor painting of a blue flower"),
}
TRAIN = dict(base="tiny", steps=120, resolution=64, rank=8, lr=1e-3, batch=2)
GEN = dict(steps=20, guidance=7.5, width=64, height=64, scheduler="ddim")


@dataclass
class DemoResult:
    home: Path
    folder: Path
    adapters: list = field(default_factory=list)
    images: dict = field(default_factory=dict)  # label -> [png paths]
    sweep: Path | None = None
    report: Path | None = None
    scores: dict = field(default_factory=dict)
    seconds: float = 0.0
    reused: list = field(default_factory=list)


def remove_demo(reg: Registry) -> int:
    """Forget everything the demo made (records first; `styler registry prune` frees files)."""
    n = 0
    with reg.locked():
        datasets = [d for d in reg.all(Dataset) if d.name.startswith(f"{NS}/")]
        ids = {d.id for d in datasets}
        for cls, pick in ((Adapter, lambda a: a.name.startswith(f"{NS}/")),
                          (Run, lambda r: r.dataset_id in ids),
                          (Output, lambda o: (o.params or {}).get("demo")),
                          (Score, lambda s: s.protocol.get("demo") or str(s.subject.get("name", "")).startswith(f"{NS}/"))):
            for rec in reg.all(cls):
                if pick(rec):
                    reg.remove(cls, rec.id)
                    n += 1
        for d in datasets:
            reg.remove(Dataset, d.id)
            shutil.rmtree(reg.home / d.path, ignore_errors=True)
            n += 1
    shutil.rmtree(reg.home / NS, ignore_errors=True)
    return n


def _say(console, text: str) -> None:
    if console is not None:
        from rich.markup import escape

        console.print(f"[bold cyan]›[/] {escape(text)}")


def run_demo(*, fresh: bool = False, console=None, registry: Registry | None = None,
             train_steps: int = TRAIN["steps"], eval_n: int = 6, gen_steps: int = GEN["steps"],
             placement=None) -> DemoResult:
    from .data.library import synth_dataset
    from .eval.reporting import write_report
    from .eval.run import evaluate
    from .generate.engine import Session
    from .generate.service import Request, generate
    from .generate.studies import run_sweep
    from .models.resolve import resolve_base
    from .train.config import build_config
    from .train.trainer import train

    from .device import resolve_placement

    t0 = time.perf_counter()
    placement = placement or resolve_placement()
    gen = {**GEN, "steps": gen_steps}
    reg = registry or Registry()
    if fresh:
        _say(console, f"--fresh: removed {remove_demo(reg)} demo record(s)")
    folder = reg.home / NS
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    result = DemoResult(reg.home, folder)

    _say(console, "the built-in tiny base (built on first use)")
    resolve_base("tiny")

    for kind, (trigger, _) in STYLES.items():
        name = f"{NS}/{kind}"
        if reg.versions(Dataset, name):
            result.reused.append(name)
        else:
            _say(console, f"synthesising dataset {name}")
            synth_dataset(name, kind=kind, n=12, size=64, seed=1, trigger=trigger, val_split=0.17, registry=reg)
        if reg.versions(Adapter, name):
            result.reused.append(f"adapter {name}")
        else:
            _say(console, f"training a LoRA on {name} ({train_steps} steps at {TRAIN['resolution']} px)")
            train(build_config(dataset=name, name=name, **{**TRAIN, "steps": train_steps}), registry=reg, console=None)
        result.adapters.append(reg.resolve(Adapter, name))

    images_dir = folder / "images"
    if state.get("images") and all(Path(p).is_file() for ps in state["images"].values() for p in ps):
        result.images = state["images"]
        result.reused.append("images")
    else:
        _say(console, "rendering baseline and adapter images")
        session = Session.open("tiny", placement)
        for kind, (_, prompt) in STYLES.items():
            for label, adapters in ((f"baseline · {kind}", []), (f"{NS}/{kind}", [(f"{NS}/{kind}", 1.0, None)])):
                outs = generate(Request(prompt=prompt, seed=0, n=2, adapters=adapters, extra={"demo": True}, **gen),
                                registry=reg, session=session, out_dir=images_dir)
                result.images[label] = [str(images_dir / f"{o.id}.png") for o in outs]
    if state.get("sweep") and Path(state["sweep"]).is_file():
        result.sweep = Path(state["sweep"])
        result.reused.append("sweep")
    else:
        _say(console, "mixing demo/calligraphy and demo/watercolor: a 7-step sweep")
        a, b = f"{NS}/calligraphy", f"{NS}/watercolor"
        req = Request(prompt="mifu, wtrc, 书法 永", seed=3, adapters=[(a, 0.5, None), (b, 0.5, None)],
                      extra={"demo": True}, **gen)
        _, result.sweep = run_sweep(req, a, b, out_dir=folder / "sweep", registry=reg, placement=placement)

    _say(console, "evaluating each adapter against its dataset and the baseline (tiny CLIP)")
    for a in result.adapters:
        scores = evaluate(a.name, n=eval_n, seed=0, clip="tiny", steps=gen_steps, registry=reg,
                          metrics="clip_t,style_sim,cmmd", placement=placement)
        result.scores.update(scores["scores"])
    result.report = write_report([a.name for a in result.adapters], folder / "report.html", registry=reg)
    state_path.write_text(json.dumps({"images": result.images, "sweep": str(result.sweep)}, ensure_ascii=False, indent=1))
    result.seconds = time.perf_counter() - t0
    return result
