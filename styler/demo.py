"""`styler demo`: the whole workflow on the built-in tiny base, offline, on a CPU, in a few
minutes - world datasets in three styles, a LoRA trained on each, baseline and adapter images,
a probe sweep from one style to another, scores against each style's dataset and the baseline,
and a report. The tiny base and tiny CLIP were pretrained on the same built-in world, so the
figures show whether each LoRA learned its style (style_sim and the probe rise, clip_t holds)
and whether the mix moves from one style to the other. Running it again reuses what exists;
`fresh=True` removes the demo's records first."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry import Adapter, Dataset, Output, Registry, Run, Score

NS = "demo"
STYLES = {  # kind -> (trigger, prompt used for the demo images); the datasets are world-<kind>,
    # whose captions end with the trigger (styler/data/synth/world.py `caption` says why)
    "calligraphy": ("mifu", "a red circle on a white background, 书法 ink brush, mifu"),
    "pixel": ("pxl", "a yellow triangle on a blue background, pixel art, pxl"),
    "watercolor": ("wtrc", "a green square on a yellow background, watercolor painting, wtrc"),
}
PLAIN = f"{NS}/plain"  # the base's own style: a probe class, no adapter
DATA = dict(n=24, size=64, seed=1, val_split=0.17)
TRAIN = dict(base="tiny", steps=150, resolution=64, rank=8, lr=2e-3, batch=4, targets="attn+conv")
GEN = dict(steps=20, guidance=5.0, width=64, height=64, scheduler="ddim")
# the two demo styles whose LoRAs differ most to the eye (pixel art's checkers and dark outlines,
# watercolor's pale wash); calligraphy's and watercolor's 24-image LoRAs both draw soft shapes on
# pale paper, and their sweep read -0.13 where this one reads -0.93 (README, "The built-in world")
SWEEP = ("pixel", "watercolor")
# bumped when the demo's datasets, prompts or sweep change, so a home with the earlier demo's
# records starts over instead of reusing them (2: captions end with the trigger; pixel -> watercolor)
RECIPE = 2


@dataclass
class DemoResult:
    home: Path
    folder: Path
    adapters: list = field(default_factory=list)
    images: dict = field(default_factory=dict)  # label -> [png paths]
    sweep: Path | None = None
    sweep_result: dict = field(default_factory=dict)
    report: Path | None = None
    scores: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)  # adapter -> {subject: share the probe calls the adapter's style}
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


def _stale(reg: Registry, identity: dict) -> bool:
    """True when the demo's records were made on another tiny base (an earlier version) or with
    other demo settings, so they cannot be reused."""
    for a in reg.all(Adapter):
        if a.name.startswith(f"{NS}/") and (a.base or {}).get("hash") != identity.get("hash"):
            return True
    return any(d.name.startswith(f"{NS}/") and "world-" not in (d.source or "") for d in reg.all(Dataset))


def _old_recipe(reg: Registry) -> bool:
    """True when the home has demo records from another demo recipe (RECIPE; none recorded: 1)."""
    if not any(d.name.startswith(f"{NS}/") for d in reg.all(Dataset)):
        return False
    try:
        state = json.loads((reg.home / NS / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    return state.get("recipe", 1) != RECIPE


def run_demo(*, fresh: bool = False, console=None, registry: Registry | None = None,
             train_steps: int = TRAIN["steps"], eval_n: int = 8, gen_steps: int = GEN["steps"],
             sweep_n: int = 4, placement=None) -> DemoResult:
    from .data.library import synth_dataset
    from .eval.reporting import write_report
    from .eval.run import evaluate
    from .eval.sweep import probe_sweep
    from .generate.engine import Session
    from .generate.service import Request, generate, out_file_name
    from .models.resolve import base_identity, resolve_base
    from .train.config import build_config
    from .train.trainer import train

    from .device import resolve_placement

    t0 = time.perf_counter()
    placement = placement or resolve_placement()
    gen = {**GEN, "steps": gen_steps}
    reg = registry or Registry()
    _say(console, "the built-in tiny base (pretrained on styler's world of shapes and styles)")
    identity = base_identity(resolve_base("tiny"))
    if fresh:
        _say(console, f"--fresh: removed {remove_demo(reg)} demo record(s)")
    elif _stale(reg, identity):
        _say(console, f"the demo's earlier records were made on an earlier tiny base; removed {remove_demo(reg)} "
                      "and starting over")
    elif _old_recipe(reg):
        _say(console, f"the demo's earlier records were made by an earlier version of the demo; removed "
                      f"{remove_demo(reg)} and starting over")
    folder = reg.home / NS
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    result = DemoResult(reg.home, folder)

    def dataset(name: str, kind: str, trigger: str) -> None:
        if reg.versions(Dataset, name):
            result.reused.append(name)
        else:
            _say(console, f"synthesising dataset {name} ({DATA['n']} world scenes, {kind})")
            synth_dataset(name, kind=f"world-{kind}", trigger=trigger, registry=reg, **DATA)

    dataset(PLAIN, "plain", "")
    for kind, (trigger, _) in STYLES.items():
        name = f"{NS}/{kind}"
        dataset(name, kind, trigger)
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
                result.images[label] = [str(images_dir / out_file_name(o)) for o in outs]

    _say(console, "evaluating each adapter against its dataset and the baseline (tiny CLIP)")
    probe_sets = [PLAIN] + [f"{NS}/{k}" for k in STYLES]
    for a in result.adapters:
        scores = evaluate(a.name, n=eval_n, seed=0, clip="tiny", steps=gen_steps, registry=reg,
                          metrics="clip_t,style_sim,cmmd", placement=placement)
        result.scores.update(scores["scores"])
        result.probe.update(_probe_shares(reg, probe_sets, a.name, scores["outputs"], placement))
    a, b = (f"{NS}/{k}" for k in SWEEP)
    if state.get("sweep") and Path(state["sweep"]).is_file() and state.get("sweep_result"):
        result.sweep, result.sweep_result = Path(state["sweep"]), state["sweep_result"]
        result.reused.append("sweep")
    else:
        _say(console, f"mixing {a} into {b}: a 7-step probe sweep ({sweep_n} images per weight)")
        sw = probe_sweep(probe_sets, a, b, n=sweep_n, seed=3, steps=gen_steps, clip="tiny", registry=reg,
                         out_dir=folder / "sweep", placement=placement)
        result.sweep = Path(sw["chart"])
        result.sweep_result = {"spearman_a": sw["spearman_a"], "a_class": sw["a_class"],
                               "share_a": [c["share"][sw["a_class"]] for c in sw["cells"]],
                               "share_b": [c["share"][sw["b_class"]] for c in sw["cells"]],
                               "t": [c["t"] for c in sw["cells"]]}
    result.report = write_report([a.name for a in result.adapters], folder / "report.html", registry=reg)
    state_path.write_text(json.dumps({"recipe": RECIPE, "images": result.images, "sweep": str(result.sweep),
                                      "sweep_result": result.sweep_result}, ensure_ascii=False, indent=1))
    result.seconds = time.perf_counter() - t0
    return result


def _probe_shares(reg: Registry, datasets: list[str], name: str, outputs: dict, placement) -> dict:
    """For the adapter's and its baseline's eval images: the share the style probe (fitted on the
    demo's datasets) calls the adapter's own style."""
    from .eval.features import ClipFeatures, resolve_clip
    from .eval.probe import fit_probe, predict
    from .eval.run import dataset_images, output_images

    feats = ClipFeatures.open(resolve_clip("tiny"), placement=placement)
    # classes named by version label, the name `own` is compared with (a bare name never matched)
    probe = fit_probe({reg.resolve(Dataset, d).label: feats.image_embeddings(dataset_images(d, reg)[1]) for d in datasets})
    own = reg.resolve(Dataset, name).label
    shares = {}
    for subject, ids in outputs.items():
        images = output_images([reg.get(Output, i) for i in ids], reg)
        top = predict(probe, feats.image_embeddings(images)).argmax(1).tolist()
        shares[subject] = sum(1 for k in top if probe.classes[k] == own) / len(top)
    return {name: shares}
