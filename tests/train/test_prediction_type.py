"""Training and held-out losses follow the scheduler's prediction type, as diffusers'
train_text_to_image_lora.py does: epsilon → the noise, v_prediction → get_velocity(latents, noise,
t), sample → the clean latents. A UNet that predicts exactly that target has zero loss."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from registry import Registry, Run
from tests.helpers import run_cli, tree

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


def _variant(tiny_base_dir, tmp_path, prediction_type):
    folder = tmp_path / f"tiny-{prediction_type}"
    shutil.copytree(tiny_base_dir, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["prediction_type"] = prediction_type
    path.write_text(json.dumps(config))
    return folder


class PerfectUNet(torch.nn.Module):
    """Predicts the true target of `prediction_type` from x_t, knowing the clean latents x0:
    x_t = a·x0 + s·ε gives ε = (x_t − a·x0) / s."""

    def __init__(self, sched, prediction_type, clean):
        super().__init__()
        self.sched, self.kind, self.clean = sched, prediction_type, clean  # clean(call index, x_t) → x0
        self.calls = 0

    def forward(self, noisy, t, hidden):
        x0 = self.clean(self.calls, noisy)
        self.calls += 1
        abar = self.sched.alphas_cumprod.to(noisy.device)[t].float().view(-1, 1, 1, 1)
        noise = (noisy - abar.sqrt() * x0) / (1 - abar).sqrt()
        target = {"epsilon": noise, "v_prediction": self.sched.get_velocity(x0, noise, t), "sample": x0}[self.kind]
        return SimpleNamespace(sample=target)


def _trainer(calli, base, tmp_path, **options):
    from styler.train.config import build_config
    from styler.train.plan import make_plan
    from styler.train.trainer import Trainer

    cfg = build_config(dataset=calli, base=str(base), resolution=32, steps=1, **options)
    reg = Registry()
    trainer = Trainer(make_plan(cfg, reg), registry=reg)
    trainer.setup(SimpleNamespace(dir=tmp_path / "run", id="test"))
    return trainer


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_a_perfect_prediction_has_zero_training_and_held_out_loss(calli, tiny_base_dir, tmp_path, prediction_type):
    from styler.train.data import ImageCaptionDataset
    from styler.train.trainer import VAL_TIMESTEPS

    trainer = _trainer(calli, _variant(tiny_base_dir, tmp_path, prediction_type), tmp_path, noise_offset=0.05)
    sched = trainer.noise_sched
    assert sched.config.prediction_type == prediction_type

    latents = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    trainer.unet = PerfectUNet(sched, prediction_type, lambda i, noisy: latents)
    gens = [torch.Generator().manual_seed(k) for k in range(3)]
    assert float(trainer._diffusion_loss(latents, ["a", "b", "c"], gens)) < 1e-8

    vae = trainer.pipe.vae
    ds = ImageCaptionDataset(trainer.val_items, 32)
    with torch.no_grad():
        clean = [vae.encode(ds[i]["pixels"][None]).latent_dist.mean * vae.config.scaling_factor for i in range(len(ds))]
    per_image = len(VAL_TIMESTEPS)
    trainer.unet = PerfectUNet(sched, prediction_type, lambda i, noisy: clean[i // per_image])
    assert trainer.val_loss() < 1e-8 and trainer.unet.calls == len(ds) * per_image


def test_min_snr_weights_follow_the_prediction_type():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from styler.train.trainer import loss_weights

    t = torch.tensor([10, 500, 990])
    for kind, expect in [("epsilon", lambda s, m: m / s), ("v_prediction", lambda s, m: m / (s + 1)),
                         ("sample", lambda s, m: m)]:
        sched = DDPMScheduler(prediction_type=kind, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        snr = compute_snr(sched, t)
        torch.testing.assert_close(loss_weights(sched, t, 5.0), expect(snr, torch.clamp(snr, max=5.0)))


def test_an_unknown_prediction_type_is_refused_before_anything_is_written(calli, tiny_base_dir, tmp_path, styler_home):
    base = _variant(tiny_base_dir, tmp_path, "flow")
    r = run_cli("train", calli, "--base", base, "--resolution", "32", "--steps", "1")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "unknown prediction_type 'flow'" in r.stderr and "\n" not in r.stderr.strip()
    assert Registry().all(Run) == [] and tree(styler_home / "runs") == []
