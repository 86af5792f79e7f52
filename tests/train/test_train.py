"""`styler train` end to end on the tiny base: registration and provenance, runs and metrics,
checkpoints, interrupt + resume, NaN, a failing save, methods, and every bad input."""

import errno
import json
import tomllib

import numpy as np
import pytest
import torch
from safetensors import safe_open

from registry import Adapter, BlobStore, Dataset, Output, Registry, Run
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--base", "tiny", "--resolution", "32"]


def _image(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("mifu, 书法 永", num_inference_steps=3, height=64, width=64, generator=g, output_type="np").images[0]


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_train_registers_an_adapter_that_changes_images(calli, styler_home):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    r = run_cli("train", calli, "--base", "tiny", "--steps", "30", "--resolution", "64", "--lr", "1e-3")
    assert r.exit_code == 0, r.stderr
    assert "trained calligraphy/mifu@1 (lora)" in r.stdout
    assert "step 30/30" in r.stderr  # plain progress lines without a TTY
    reg = Registry()
    a = reg.resolve(Adapter, "calligraphy/mifu")
    run = reg.get(Run, a.run_id)
    assert (run.status, run.step, run.adapter_id, run.dataset_id) == ("completed", 30, a.id, a.dataset_id)
    assert a.base["name"] == "tiny" and len(a.base["hash"]) == 64 and a.trigger == "mifu"
    assert (a.rank, a.alpha, a.targets) == (16, 16.0, ["to_q", "to_k", "to_v", "to_out.0"])
    path = BlobStore(styler_home).path(a.blob)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["styler.adapter"] == "calligraphy/mifu@1" and meta["styler.run_id"] == run.id
    assert json.loads(meta["styler.base"])["hash"] == a.base["hash"]
    assert json.loads(meta["styler.dataset"])["id"] == a.dataset_id
    assert "lora_adapter_metadata" in meta and meta["ss_network_dim"] == "16"

    base = load_pipeline(resolve_base("tiny"))
    before = _image(base)
    base.load_lora_weights(str(path))  # diffusers' own loader reads styler's file
    after = _image(base)
    assert np.abs(after - before).max() > 1e-3


def test_run_files_metrics_and_effective_config(calli, styler_home):
    r = run_cli("train", calli, *FAST, "--steps", "5", "--rank", "4", "--alpha", "2", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    run = Registry().all(Run)[0]
    rdir = styler_home / "runs" / run.id
    rows = [json.loads(line) for line in (rdir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(row["loss"]) and row["lr"] == 1e-4 for row in rows)
    assert all(row["memory"]["rss"] > 0 for row in rows)  # what `styler tui` shows for a live run
    saved = tomllib.loads((rdir / "config.toml").read_text())
    assert (saved["rank"], saved["alpha"], saved["seed"], saved["dataset"]) == (4, 2.0, 3, f"{calli}@1")  # the version is pinned
    # the saved config is enough to run again: same data order and noise, same loss curve
    r2 = run_cli("train", "--config", rdir / "config.toml", "--name", "again")
    assert r2.exit_code == 0, r2.stderr
    run2 = Registry().find(Run, adapter_id=Registry().resolve(Adapter, "again").id)[0]
    rows2 = [json.loads(line) for line in (styler_home / "runs" / run2.id / "metrics.jsonl").read_text().splitlines()]
    assert [row["loss"] for row in rows2] == pytest.approx([row["loss"] for row in rows], rel=1e-5)


def test_alpha_not_equal_rank_reloads_exactly(calli, styler_home):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    assert run_cli("train", calli, *FAST, "--steps", "3", "--rank", "4", "--alpha", "1", "--targets", "attn+conv",
                   "--text-encoder", "--lr", "1e-2").exit_code == 0
    a = Registry().resolve(Adapter, calli)
    path = BlobStore(styler_home).path(a.blob)
    pipe = load_pipeline(resolve_base("tiny"))
    pipe.load_lora_weights(str(path))
    # peft rebuilt the saved config: scale alpha/r = 0.25 on every layer, conv layers included
    scalings = {m.scaling["default_0"] for m in pipe.unet.modules() if hasattr(m, "scaling") and m.scaling}
    assert scalings == {0.25}
    convs = [n for n, m in pipe.unet.named_modules() if n.endswith("conv1") and hasattr(m, "lora_A")]
    assert convs
    assert any(hasattr(m, "lora_A") for m in pipe.text_encoder.modules())


def test_dora_trains_and_reloads(calli, styler_home):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    assert run_cli("train", calli, *FAST, "--steps", "2", "--dora", "--rank", "4").exit_code == 0
    a = Registry().resolve(Adapter, calli)
    assert any("lora_magnitude_vector" in k for k in _tensors(BlobStore(styler_home).path(a.blob)))
    pipe = load_pipeline(resolve_base("tiny"))
    pipe.load_lora_weights(str(BlobStore(styler_home).path(a.blob)))
    assert any(getattr(m, "use_dora", {}).get("default_0") for m in pipe.unet.modules() if hasattr(m, "use_dora"))


def test_resume_of_a_two_process_run_uses_two_processes(calli, styler_home, monkeypatch):
    from styler.train import parallel, trainer

    assert run_cli("train", calli, *FAST, "--steps", "2", "--processes", "2", "--checkpoint-every", "1").exit_code == 0
    run = Registry().all(Run)[0]
    Registry().update(Run, run.id, status="interrupted")
    seen = {}
    monkeypatch.setattr(parallel, "train_parallel", lambda cfg, **kw: seen.update(kw) or (_ for _ in ()).throw(KeyboardInterrupt))
    run_cli("train", "--resume", run.id)
    assert seen.get("resume") == run.id
    cfg, _ = trainer._resume_config(Registry(), run.id, trainer.TrainConfig())
    with pytest.raises(Exception, match="trains with 2 process"):
        trainer.train(cfg, registry=Registry(), resume=run.id)


def test_memory_options_change_memory_not_results(calli, styler_home):
    args = [*FAST, "--steps", "3", "--batch", "2", "--lr", "1e-3", "--text-encoder"]
    assert run_cli("train", calli, *args, "--name", "plain").exit_code == 0
    r = run_cli("train", calli, *args, "--low-memory", "--snr-gamma", "5", "--noise-offset", "0.05", "--name", "low")
    assert r.exit_code == 0, r.stderr
    r = run_cli("train", calli, *args, "--low-memory", "--name", "low2")
    assert r.exit_code == 0, r.stderr
    reg = Registry()
    assert _losses(reg, styler_home, "low2") == pytest.approx(_losses(reg, styler_home, "plain"), rel=1e-4)
    assert _losses(reg, styler_home, "low") != pytest.approx(_losses(reg, styler_home, "plain"), rel=1e-4)


def test_dry_run_prints_the_plan_and_writes_nothing(calli):
    r = run_cli("train", calli, *FAST, "--steps", "12", "--batch", "2", "--accum", "2", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "12 × 4 samples" in r.stdout and "trainable" in r.stdout and "memory" in r.stdout
    plan = json.loads(run_cli("train", calli, *FAST, "--epochs", "2", "--dry-run", "--json").stdout)
    assert plan["steps"] == 12 and plan["trainable_params"] > 0  # 6 images × 2 epochs / batch 1
    assert Registry().all(Run) == []


def test_checkpoints_interrupt_and_resume_match_an_uninterrupted_run(calli, styler_home, monkeypatch):
    from styler.train import trainer as tr

    args = [*FAST, "--steps", "8", "--checkpoint-every", "3", "--lr", "1e-3", "--augment", "flip"]
    assert run_cli("train", calli, *args, "--name", "whole").exit_code == 0
    whole = _tensors(BlobStore(styler_home).path(Registry().resolve(Adapter, "whole").blob))

    real = tr.Trainer.step_loss

    def interrupt_at_5(self, step, micro):
        if step == 5:
            raise KeyboardInterrupt
        return real(self, step, micro)

    monkeypatch.setattr(tr.Trainer, "step_loss", interrupt_at_5)
    r = run_cli("train", calli, *args, "--name", "split")
    assert r.exit_code == 130
    assert "interrupted at step 5/8" in r.stderr and "checkpoint saved at step 5" in r.stderr
    run = [x for x in Registry().all(Run) if x.config.get("name") == "split"][0]
    assert run.status == "interrupted" and run.step == 5
    ckdir = styler_home / "runs" / run.id / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-0000003", "step-0000005"]
    assert all((p / "COMPLETE").exists() for p in ckdir.iterdir())
    assert Registry().find(Adapter, name="split") == []

    monkeypatch.setattr(tr.Trainer, "step_loss", real)
    r = run_cli("train", "--resume", run.id)
    assert r.exit_code == 0, r.stderr
    assert Registry().get(Run, run.id).status == "completed"
    resumed = _tensors(BlobStore(styler_home).path(Registry().resolve(Adapter, "split").blob))
    assert resumed.keys() == whole.keys()
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_keeps_the_last_checkpoint_and_suggests_precision(calli, styler_home, monkeypatch):
    from styler.train import trainer as tr

    real = tr.Trainer.step_loss

    def nan_at_4(self, step, micro):
        loss = real(self, step, micro)
        return loss * float("nan") if step == 4 else loss

    monkeypatch.setattr(tr.Trainer, "step_loss", nan_at_4)
    r = run_cli("train", calli, *FAST, "--steps", "10", "--checkpoint-every", "2")
    assert r.exit_code == 1
    assert "NaN/inf at step 5" in r.stderr and "last good checkpoint is step 4" in r.stderr and "bf16" in r.stderr
    run = Registry().all(Run)[0]
    assert run.status == "failed" and "NaN" in run.error
    ckdir = styler_home / "runs" / run.id / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-0000002", "step-0000004"]
    assert Registry().all(Adapter) == []


def test_a_failing_adapter_save_leaves_registry_and_checkpoint_intact(calli, styler_home, monkeypatch):
    from safetensors import torch as st

    real = st.save_file
    run_cli("train", calli, *FAST, "--steps", "2", "--name", "ok")  # an adapter that must survive
    blobs_before = sorted(p.name for p in (styler_home / "blobs" / "sha256").rglob("*") if p.is_file())

    def disk_full(tensors, filename, metadata=None):
        if metadata and "styler.adapter" in metadata:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", disk_full)
    r = run_cli("train", calli, *FAST, "--steps", "4", "--checkpoint-every", "2", "--name", "full")
    assert r.exit_code == 1
    assert "No space left on device" in r.stderr and "checkpoint (step 2) is intact" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not save the adapter")
    assert "completed" not in r.stderr.split("ok@1")[-1]  # the display never claimed success
    assert [a.name for a in Registry().all(Adapter)] == ["ok"]
    assert sorted(p.name for p in (styler_home / "blobs" / "sha256").rglob("*") if p.is_file()) == blobs_before
    run = [x for x in Registry().all(Run) if x.config.get("name") == "full"][0]
    assert run.status == "failed"
    assert (styler_home / "runs" / run.id / "checkpoints" / "step-0000002" / "COMPLETE").exists()


def test_validation_images_and_held_out_loss(calli, styler_home):
    r = run_cli("train", calli, *FAST, "--steps", "4", "--validate-every", "2", "--validation-prompt", "mifu, 书法 永",
                "--validation-prompt", "a [bold]cat[/bold]")
    assert r.exit_code == 0, r.stderr
    run = Registry().all(Run)[0]
    outs = Registry().find(Output, run_id=run.id)
    assert len(outs) == 4 and {o.kind for o in outs} == {"validation"}
    assert {o.params["train_step"] for o in outs} == {2, 4}
    assert all(BlobStore(styler_home).has(o.blob) for o in outs)
    rows = [json.loads(x) for x in (styler_home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]
    assert [("val_loss" in row) for row in rows] == [False, True, False, True]
    assert len(list((styler_home / "runs" / run.id / "samples").glob("step-*.png"))) == 4  # and sheet.png


def test_validation_without_prompts_uses_the_dataset_captions_carries_png_metadata_and_says_where(calli, styler_home):
    from styler.generate.pngmeta import parse_a1111_parameters, read_png_meta
    from styler.train.data import load_items

    r = run_cli("train", calli, *FAST, "--steps", "2", "--validate-every", "2")
    assert r.exit_code == 0, r.stderr
    run = Registry().all(Run)[0]
    samples = styler_home / "runs" / run.id / "samples"
    assert str(samples) in " ".join((r.stdout + r.stderr).split())  # the user is told where they go
    dataset = Registry().resolve(Dataset, calli)
    captions = [it.text for it in load_items(dataset, styler_home, "val") + load_items(dataset, styler_home, "train")]
    assert run.config["validation_prompts"] == list(dict.fromkeys(captions))[:2]  # pinned in the run's config
    outs = Registry().find(Output, run_id=run.id)
    assert run.config["validation_prompts"] and [o.prompt for o in outs] == run.config["validation_prompts"]
    files = sorted(samples.glob("step-*.png"))
    assert len(files) == len(outs)
    record, text = read_png_meta(files[0])
    fields = parse_a1111_parameters(text)
    assert fields["Styler run"] == run.id and fields["Train step"] == "2" and fields["Steps"]
    assert record["run_id"] == run.id and record["prompt"] == outs[0].prompt and record["train_step"] == 2
    # the CLI names its provenance: the run and step, not "base"
    made_by = f"run {run.id[-8:]} at step 2"
    listed = run_cli("registry", "ls", "outputs").stdout
    assert made_by in " ".join(listed.split()) or made_by.replace(" ", "") in "".join(listed.split())
    shown = run_cli("registry", "show", outs[0].id).stdout
    assert "made by" in shown and made_by in shown


def test_textual_inversion_trains_only_the_new_token(calli, styler_home):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    r = run_cli("train", calli, *FAST, "--method", "textual-inversion", "--token", "<mifu>", "--init-token", "ink",
                "--steps", "4", "--lr", "5e-2")
    assert r.exit_code == 0, r.stderr
    a = Registry().resolve(Adapter, calli)
    assert a.method == "textual-inversion" and a.trigger == "<mifu>"
    vec = _tensors(BlobStore(styler_home).path(a.blob))
    assert list(vec) == ["<mifu>"] and vec["<mifu>"].shape[0] == 1
    pipe = load_pipeline(resolve_base("tiny"))
    ink = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("ink")].detach().clone()
    pipe.load_textual_inversion(str(BlobStore(styler_home).path(a.blob)))
    new = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<mifu>")]
    assert not torch.allclose(new, ink)  # it moved away from its starting word


def test_dreambooth_generates_class_images_once(calli, styler_home):
    args = [*FAST, "--method", "dreambooth", "--class-prompt", "calligraphy", "--class-images", "2", "--steps", "2"]
    r = run_cli("train", calli, *args)
    assert r.exit_code == 0, r.stderr
    assert "generating 2 class image(s)" in r.stderr
    folders = list((styler_home / "cache" / "class-images").iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("*.png"))) == 2
    r = run_cli("train", calli, *args)
    assert r.exit_code == 0 and "generating" not in r.stderr  # reused
    assert [a.method for a in Registry().all(Adapter)] == ["dreambooth", "dreambooth"]


def test_adapters_ls_and_show(calli):
    run_cli("train", calli, *FAST, "--steps", "2")
    r = run_cli("adapters", "ls")
    assert r.exit_code == 0 and "calligraphy/mifu" in r.stdout and "lora" in r.stdout
    r = run_cli("adapters", "show", "calligraphy/mifu@1")
    assert r.exit_code == 0 and "rank 16" in r.stdout and "calligraphy/mifu@1" in r.stdout and "completed" in r.stdout
    data = json.loads(run_cli("adapters", "show", "calligraphy/mifu", "--json").stdout)
    assert data["run"]["status"] == "completed" and data["dataset"]["name"] == "calligraphy/mifu"
    assert run_cli("adapters", "show", "nope").exit_code == 1


def _losses(reg, styler_home, name):
    run = reg.get(Run, reg.resolve(Adapter, name).run_id)
    return [json.loads(x)["loss"] for x in (styler_home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["nope"], 1, "no dataset named 'nope'"),
        (["calligraphy/mifu@9"], 1, "has no version @9"),
        (["calligraphy/mifu", "--batch", "7"], 2, "fewer than --batch 7"),
        (["calligraphy/mifu", "--resolution", "60"], 2, "multiple of 8"),
        (["calligraphy/mifu", "--rank", "0"], 2, "--rank must be > 0"),
        (["calligraphy/mifu", "--lr", "0"], 2, "--lr must be > 0"),
        (["calligraphy/mifu", "--lr", "-1e-4"], 2, "--lr must be > 0"),
        (["calligraphy/mifu", "--targets", "attn+mlp"], 2, "unknown --targets part 'mlp'"),
        (["calligraphy/mifu", "--targets", "to_x"], 2, "to_q"),
        (["calligraphy/mifu", "--method", "textual-inversion", "--text-encoder"], 2, "cannot be combined"),
        (["calligraphy/mifu", "--method", "dreambooth"], 2, "--class-prompt"),
        (["calligraphy/mifu", "--steps", "3", "--epochs", "2"], 2, "not both"),
        (["calligraphy/mifu", "--augment", "crop"], 2, "--no-cache-latents"),
        (["calligraphy/mifu", "--augment", "rotate"], 2, "unknown --augment rotate"),
        (["calligraphy/mifu", "--scheduler", "warp"], 2, "unknown --scheduler"),
        (["calligraphy/mifu", "--optimizer", "adamw8bit"], 2, "adamw8bit"),
        (["calligraphy/mifu", "--base", "/no/such/model"], 2, "/no/such/model"),
        (["calligraphy/mifu", "--precision", "fp8"], 2, "unknown --precision"),
        (["calligraphy/mifu", "--log-with", "mlflow"], 2, "unknown --log-with"),
    ],
)
def test_bad_input(calli, args, code, fragment):
    r = run_cli("train", *args, "--steps" if "--steps" not in args and "--epochs" not in args else "--seed", "1")
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert fragment in r.stderr and r.stderr.startswith("error:") and "\n" not in r.stderr.strip()
    assert Registry().all(Adapter) == [] and Registry().all(Run) == []


def test_bad_config_file(calli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('rank = 4\nlearning_rate = 1e-4\n')
    r = run_cli("train", calli, "--config", bad)
    assert r.exit_code == 2 and "unknown key(s) learning_rate" in r.stderr
    bad.write_text('rank = "four"\n')
    r = run_cli("train", calli, "--config", bad, "--dry-run")
    assert r.exit_code == 2 and "rank must be a whole number" in r.stderr


def test_resume_refuses_another_base_or_method_and_finished_runs(calli, styler_home, monkeypatch):
    from styler.train import trainer as tr

    real = tr.Trainer.step_loss
    monkeypatch.setattr(tr.Trainer, "step_loss", lambda self, s, m: (_ for _ in ()).throw(KeyboardInterrupt) if s == 2 else real(self, s, m))
    assert run_cli("train", calli, *FAST, "--steps", "4").exit_code == 130
    run = Registry().all(Run)[0]
    r = run_cli("train", "--resume", run.id, "--method", "textual-inversion")
    assert r.exit_code == 2 and "used method 'lora'" in r.stderr
    r = run_cli("train", "--resume", run.id, "--base", "some/other-model")
    assert r.exit_code == 2 and "used base 'tiny'" in r.stderr
    monkeypatch.setattr(tr.Trainer, "step_loss", real)
    assert run_cli("train", "--resume", run.id).exit_code == 0
    r = run_cli("train", "--resume", run.id)
    assert r.exit_code == 2 and "already completed" in r.stderr
    r = run_cli("train", "--resume", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.exit_code == 1 and "no run with id" in r.stderr


def test_missing_logger_package_is_named(calli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    r = run_cli("train", calli, *FAST, "--steps", "1", "--log-with", "tensorboard")
    assert r.exit_code == 2 and "pip install tensorboard" in r.stderr


def test_adamw_is_fused_on_the_cpu_and_cuda_only(calli, monkeypatch):
    """The training loop's AdamW is torch's fused one where every parameter is on the CPU or CUDA
    (one kernel over all tensors; benchmarks/adamw_fused.py measures it), the default elsewhere."""
    from styler.train.trainer import adamw_options

    cpu = [{"params": [torch.zeros(2, requires_grad=True)]}]
    assert adamw_options(cpu) == {"fused": True}
    assert adamw_options([{"params": [torch.zeros(2, device="meta")]}]) == {}
    made = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    r = run_cli("train", calli, *FAST, "--steps", "2", "--name", "fused")
    assert r.exit_code == 0, r.stderr
    assert made and made[0].get("fused") is True
