"""`--method adalora`: peft's AdaLoRA in the one loop, its rank budget on the panel, and the saved
file a plain LoRA with the trained ΔW (peft 0.21's SVDLinear/SVDConv2d get_delta_weight and merge
are the reference), mixing exactly, resuming exactly, and every refused combination.

Checked by hand on an adalora file with attn+conv+text-encoder layers of ranks 1–3 (not run here):
diffusers 0.42.1's load_lora_weights + fuse_lora gives base + ΔW exactly (max diff 0.0), and the
kohya export through ComfyUI's LoRAAdapter.load/calculate_weight (comfy/weight_adapter/lora.py at
6fd406fb14ca663225b88c6f75d7a7f2b997e5a0) gives it to 1.5e-7 of |ΔW| (fp64), per-layer ranks included."""

import json
import re

import pytest
import torch

from registry import Adapter, BlobStore, Registry, Run
from tests.helpers import run_cli, tree

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--base", "tiny", "--resolution", "32"]


def _trained(calli, **options):
    """A finished adalora run driven as train() drives it, with the live peft model kept."""
    from styler.train.config import build_config
    from styler.train.plan import make_plan
    from styler.train.runs import register_adapter, start_run
    from styler.train.trainer import Trainer

    reg = Registry()
    cfg = build_config(dataset=calli, base="tiny", resolution=32, method="adalora", lr=2e-2, **options)
    plan = make_plan(cfg, reg)
    trainer = Trainer(plan, registry=reg)
    handle = start_run(reg, cfg, plan.dataset, plan.base_identity, plan.total_steps)
    trainer.setup(handle)
    trainer.run()
    adapter = register_adapter(handle, cfg, plan.dataset, plan.base_identity, trainer.method,
                               {"steps": plan.total_steps})
    return trainer, adapter, handle


def test_saved_lora_is_the_trained_adalora_delta_and_mixes_exactly(calli, styler_home):
    from styler.adapters.formats import read_adapter
    from styler.adapters.lora import LoraLayer
    from styler.generate.engine import AdapterChoice, Session

    trainer, adapter, handle = _trained(calli, steps=8, rank=2, targets="attn+conv", adalora_interval=1)
    method = trainer.method
    ranks = method.final_ranks()
    assert len(set(ranks.values())) > 1  # the allocation made the layers differ
    assert sum(ranks.values()) == method.plan.target_rank * len(ranks)  # ends on the target budget
    data = read_adapter(BlobStore(styler_home).path(adapter.blob))
    assert {f"{c}.{m}": layer.rank for (c, m), layer in data.layers.items()} == {n: r for n, r in ranks.items() if r}
    assert any(layer.down.dim() == 4 for layer in data.layers.values())  # conv layers too (SVDConv2d)

    live = {}
    for name, m in method.layers.items():
        component, module = name.split(".", 1)
        live[(component, module)] = m.get_delta_weight("default").detach().clone()  # peft's own ΔW
        w0 = m.get_base_layer().weight.detach().clone()
        m.merge()
        merged = m.get_base_layer().weight.detach().clone()
        m.unmerge()
        saved = data.layers.get((component, module))
        expected = w0 + saved.delta() if saved is not None else w0
        assert torch.allclose(merged, expected, rtol=0, atol=1e-6), name
        if saved is None:
            assert not live[(component, module)].any(), name  # a layer pruned away had ΔW exactly 0
        else:
            assert torch.allclose(saved.delta(), live[(component, module)], rtol=1e-5, atol=1e-8), name
    assert any(d.abs().max() > 1e-4 for d in live.values())  # it trained

    # mixed at 0.5 with a plain LoRA through what `styler mix` uses: W + 0.5·ΔW_ada + 0.7·ΔW_lora
    r = run_cli("train", calli, *FAST, "--steps", "2", "--rank", "3", "--alpha", "1.5", "--lr", "1e-2", "--name", "plain")
    assert r.exit_code == 0, r.stderr
    reg = Registry()
    plain = reg.resolve(Adapter, "plain")
    plain_layers = read_adapter(BlobStore(styler_home).path(plain.blob)).layers
    session = Session.open("tiny")
    before = {k: m.weight.detach().clone() for k, m in _modules(session.pipe, set(live) | set(plain_layers)).items()}
    session.apply([AdapterChoice(reg.resolve(Adapter, adapter.label), 0.5), AdapterChoice(plain, 0.7)], reg)
    after = _modules(session.pipe, before)
    for key, w0 in before.items():
        expected = w0.double() + 0.5 * live.get(key, torch.zeros_like(w0)).double()
        if key in plain_layers:
            expected += 0.7 * LoraLayer.delta(plain_layers[key]).double()
        assert torch.allclose(after[key].weight.double(), expected, rtol=0, atol=2e-6), key


def _modules(pipe, keys):
    return {(c, m): getattr(pipe, c).get_submodule(m) for c, m in keys}


def test_cli_run_shows_the_shrinking_budget_and_records_the_final_ranks(calli, styler_home, tmp_path):
    (tmp_path / "c.toml").write_text("log_every = 1\n")
    r = run_cli("train", calli, *FAST, "--method", "adalora", "--steps", "10", "--rank", "2", "--lr", "1e-2",
                "--adalora-tinit", "0.2", "--adalora-tfinal", "0.3", "--config", tmp_path / "c.toml")
    assert r.exit_code == 0, r.stderr
    assert "(adalora)" in r.stdout
    reg = Registry()
    a = reg.resolve(Adapter, calli)
    run = reg.get(Run, a.run_id)
    rows = [json.loads(line) for line in (styler_home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]
    budgets = [row["rank_budget"] for row in rows]
    info = a.metadata["adalora"]
    init, target = info["init_total"], info["target_total"]
    assert (info["init_rank"], info["target_rank"]) == (3, 2) and init == 3 * info["layers"]
    # AdaLoRA's cubic schedule (the paper's eq. 11, steps from 0): tinit 2 and tfinal 3 of 10 steps
    cubic = [int((init - target) * (1 - (i - 2) / (10 - 3 - 2)) ** 3 + target) for i in range(3, 7)]
    assert budgets == [init] * 3 + cubic + [target] * 3
    assert init > cubic[0] > cubic[1] > cubic[2] > cubic[3] >= target  # it shrinks every pruning step
    assert [row["rank_allocated"] for row in rows][-4:] == [target] * 4
    lines = r.stderr.splitlines()
    assert f"ranks {init} (budget {init} → {target}, warm-up)" in lines[1]
    assert any(f"(budget {target} → {target}, fixed)" in line for line in lines)
    assert f"final ranks {target} over {info['layers']} layers (target {target}, from {init})" in r.stderr
    # the run and adapter records keep the per-layer ranks; `adapters show` prints them
    assert run.results["adalora"]["ranks"] == info["ranks"] and sum(info["ranks"].values()) == target
    assert (a.method, a.rank, run.method) == ("adalora", 2, "adalora")
    shown = run_cli("adapters", "show", a.label)
    assert shown.exit_code == 0, shown.stderr
    assert "adalora   ranks 3 → 2 per layer on average" in " ".join(shown.stdout.split("\n  "))
    listed = dict(re.findall(r"^    (\S+)\s+(\d+)$", shown.stdout, flags=re.M))
    assert {k: int(v) for k, v in listed.items()} == info["ranks"]


def test_resumed_run_prunes_and_ends_as_an_uninterrupted_one(calli, styler_home, monkeypatch):
    args = [calli, *FAST, "--method", "adalora", "--steps", "6", "--rank", "2", "--lr", "1e-2", "--checkpoint-every", "3"]
    assert run_cli("train", *args, "--name", "whole").exit_code == 0
    monkeypatch.setenv("STYLER_TEST_FAULT", "0:4:raise")  # fails at step 5, after the step-3 checkpoint (made while pruning)
    r = run_cli("train", *args, "--name", "cut")
    assert r.exit_code != 0
    monkeypatch.delenv("STYLER_TEST_FAULT")
    reg = Registry()
    cut = [run for run in reg.all(Run) if run.status == "failed"][0]
    r = run_cli("train", "--resume", cut.id, "--steps", "7")
    assert r.exit_code == 2 and "rank schedule was set by its 6 steps" in r.stderr
    r = run_cli("train", "--resume", cut.id)
    assert r.exit_code == 0, r.stderr
    whole, resumed = reg.resolve(Adapter, "whole"), reg.resolve(Adapter, "cut")
    assert resumed.metadata["adalora"]["ranks"] == whole.metadata["adalora"]["ranks"]
    from styler.adapters.formats import read_adapter

    a, b = (read_adapter(BlobStore(styler_home).path(x.blob)).layers for x in (whole, resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].delta(), b[key].delta(), rtol=1e-5, atol=1e-7), key


@pytest.mark.parametrize("extra, message", [
    (["--dora"], "--dora cannot be combined with --method adalora"),
    (["--processes", "2"], "--method adalora trains in one process"),
    (["--adalora-init-rank", "2", "--rank", "4"], "--adalora-init-rank 2 must be larger than the target rank 4"),
    (["--adalora-tinit", "0.6", "--adalora-tfinal", "0.5"], "leave no steps to prune the ranks in"),
    (["--steps", "1"], "over 1 steps: 0 warm-up and 1 final steps leave none to prune"),
    (["--adalora-init-rank", "200"], "--method adalora's start rank 200 is larger than the smallest layer"),
    (["--adalora-interval", "0"], "--adalora-interval must be >= 1"),
])
def test_bad_adalora_options_exit_2_with_one_line_and_write_nothing(calli, styler_home, extra, message):
    before = tree(styler_home / "runs")
    r = run_cli("train", calli, *FAST, "--method", "adalora", "--steps", "10", *extra)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert tree(styler_home / "runs") == before and not Registry().all(Run)


def test_adalora_options_without_the_method_are_refused(calli):
    r = run_cli("train", calli, *FAST, "--adalora-target-rank", "4")
    assert r.exit_code == 2 and "--adalora-target-rank applies to --method adalora, not lora" in r.stderr


def test_the_panel_shows_the_budget_against_its_target():
    from rich.console import Console

    from styler.train.monitor import RankBudget, TrainState, plain_line, render

    state = TrainState(run_id="r", name="n", method="adalora", total_steps=10, step=4,
                       ranks=RankBudget(budget=140, target=112, initial=168, allocated=140, layers=56, phase="pruning"))
    console = Console(record=True, width=120)
    console.print(render(state))
    text = console.export_text()
    assert "budget 140 → 112 (from 168, 56 layers)" in text and "kept 140  pruning" in text
    assert "━" * 5 in text  # half the way down from 168 to 112
    assert "ranks 140 (budget 140 → 112, pruning)" in plain_line(state)
