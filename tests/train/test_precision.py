"""--precision: frozen weights in the weight dtype, trainable ones in fp32 (diffusers' recipe), on
the CPU under bf16; the plan's memory estimate follows; the adapter file stays fp32."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from registry import Adapter, BlobStore, Registry, Run
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--base", "tiny", "--resolution", "32"]


def _spy_dtypes(monkeypatch):
    """Record the dtypes the loop trains with (read when the loop starts)."""
    from styler.train import trainer as tr

    seen = {}
    real = tr.Trainer.run

    def run(self, *a, **kw):
        unet, te, vae = self.pipe.unet, self.pipe.text_encoder, self.pipe.vae
        seen["unet_frozen"] = {p.dtype for p in unet.parameters() if not p.requires_grad}
        seen["unet_lora"] = {p.dtype for n, p in unet.named_parameters() if "lora_" in n}
        seen["unet_trainable"] = {p.dtype for p in unet.parameters() if p.requires_grad}
        seen["te"] = {p.dtype for p in te.parameters() if not p.requires_grad}
        seen["te_trainable"] = {p.dtype for p in te.parameters() if p.requires_grad}
        seen["vae"] = {p.dtype for p in vae.parameters()}
        seen["optimized"] = {p.dtype for g in self.optimizer.param_groups for p in g["params"]}
        return real(self, *a, **kw)

    monkeypatch.setattr(tr.Trainer, "run", run)
    return seen


def test_bf16_on_cpu_holds_frozen_weights_in_bf16_and_lora_in_fp32(calli, styler_home, monkeypatch):
    seen = _spy_dtypes(monkeypatch)
    r = run_cli("train", calli, *FAST, "--steps", "3", "--precision", "bf16", "--text-encoder", "--lr", "1e-3",
                "--no-cache-latents", "--loader-workers", "0")
    assert r.exit_code == 0, r.stderr
    assert seen["unet_frozen"] == {torch.bfloat16} and seen["te"] == {torch.bfloat16}
    assert seen["vae"] == {torch.bfloat16}  # bf16 has fp32's range: the VAE is cast too
    assert seen["unet_lora"] == seen["unet_trainable"] == seen["te_trainable"] == {torch.float32}
    assert seen["optimized"] == {torch.float32}
    reg = Registry()
    a = reg.resolve(Adapter, calli)
    run = reg.get(Run, a.run_id)
    assert run.status == "completed" and run.config["precision"] == "bf16"
    assert (run.device, run.dtype) == ("cpu", "bf16")  # the run keeps where and in what it trained
    losses = [json.loads(x)["loss"] for x in (styler_home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    with safe_open(str(BlobStore(styler_home).path(a.blob)), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        b = [f.get_tensor(k) for k in f.keys() if "lora_B" in k]
    assert dtypes == {"F32"}  # the saved adapter is fp32, as under --precision no
    assert any(float(t.abs().max()) > 0 for t in b)  # B starts at zero: it trained


def test_fp16_keeps_the_vae_fp32_and_textual_inversion_keeps_the_text_encoder_fp32(calli, monkeypatch):
    from styler.train.config import build_config
    from styler.train.plan import build_pipeline, make_plan

    reg = Registry()
    fp16 = build_config(dataset=calli, base="tiny", precision="fp16")
    pipe, _ = build_pipeline(make_plan(fp16, reg, check_device=False), "cpu")
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.unet.parameters() if not p.requires_grad} == {torch.float16}
    cfg = build_config(dataset=calli, base="tiny", precision="bf16", method="textual-inversion", token="<m>")
    pipe, method = build_pipeline(make_plan(cfg, reg), "cpu")
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.bfloat16}
    assert method.embedding.dtype == torch.float32


def test_dry_run_memory_estimate_follows_precision(calli):
    def plan(*extra):
        r = run_cli("train", calli, *FAST, "--steps", "2", "--dry-run", "--json", *extra)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    fp32, bf16, fp16 = plan(), plan("--precision", "bf16"), plan("--precision", "fp16")
    n = fp32["trainable_params"]
    assert bf16["trainable_params"] == fp16["trainable_params"] == n
    frozen32 = fp32["memory_estimate_bytes"] - 16 * n  # fp32 weight + grad + two Adam moments each
    assert fp16["memory_estimate_bytes"] > bf16["memory_estimate_bytes"]  # fp16 keeps the VAE fp32
    # bf16 halves every frozen weight, and nothing else
    assert bf16["memory_estimate_bytes"] - 16 * n == frozen32 // 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 trains on a GPU")
def test_fp16_without_a_gpu_is_a_usage_error(calli):
    r = run_cli("train", calli, *FAST, "--steps", "1", "--precision", "fp16")
    assert r.exit_code == 2 and "--precision fp16 needs a CUDA GPU" in r.stderr and "bf16" in r.stderr
    assert "\n" not in r.stderr.strip() and Registry().all(Run) == []


def test_an_fp16_loss_scaler_is_checkpointed_and_restored(calli, styler_home, monkeypatch):
    """accelerate makes a GradScaler only for fp16 on a GPU; here the CPU's stands in for it, so the
    loop's save and restore of `accelerator.scaler` is exercised: a resumed run ends at the scale
    (and weights) of an uninterrupted one."""
    import accelerate

    from styler.train import trainer as tr

    made = []
    real_init = accelerate.Accelerator.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0, growth_interval=1)
        made.append(self)

    monkeypatch.setattr(accelerate.Accelerator, "__init__", init)
    args = [*FAST, "--steps", "4", "--checkpoint-every", "2", "--lr", "1e-3"]
    assert run_cli("train", calli, *args, "--name", "whole").exit_code == 0
    whole_scale = made[-1].scaler.get_scale()
    assert whole_scale == 1024.0 * 2**4

    real_loss = tr.Trainer.step_loss
    monkeypatch.setattr(tr.Trainer, "step_loss",
                        lambda self, s, m: (_ for _ in ()).throw(KeyboardInterrupt) if s == 3 else real_loss(self, s, m))
    assert run_cli("train", calli, *args, "--name", "split").exit_code == 130
    run = [x for x in Registry().all(Run) if x.config.get("name") == "split"][0]
    saved = json.loads((styler_home / "runs" / run.id / "checkpoints" / "step-0000003" / "scaler.json").read_text())
    assert saved["scale"] == 1024.0 * 2**3
    monkeypatch.setattr(tr.Trainer, "step_loss", real_loss)
    assert run_cli("train", "--resume", run.id).exit_code == 0
    assert made[-1].scaler.get_scale() == whole_scale  # a fresh scaler would end at 1024 * 2**1

    def weights(name):
        with safe_open(str(BlobStore(styler_home).path(Registry().resolve(Adapter, name).blob)), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    a, b = weights("whole"), weights("split")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
