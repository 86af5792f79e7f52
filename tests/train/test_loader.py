"""The uncached path loads and augments images in DataLoader workers without changing a number."""

import json

import pytest
import torch
from safetensors import safe_open

from registry import Adapter, BlobStore, Registry, Run
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

UNCACHED = ["--base", "tiny", "--resolution", "32", "--no-cache-latents", "--augment", "flip,crop,color",
            "--batch", "2", "--steps", "5", "--lr", "1e-3", "--checkpoint-every", "2"]


def _rows(home, run_id):
    return [json.loads(x) for x in (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]


def _weights(home, name):
    with safe_open(str(BlobStore(home).path(Registry().resolve(Adapter, name).blob)), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_workers_and_a_resume_give_the_same_losses_as_loading_in_process(calli, styler_home, monkeypatch):
    from styler.train import trainer as tr

    workers = []
    real_open = tr.Trainer._open_batches

    def spy(self, start_step):
        batches = real_open(self, start_step)
        workers.append(batches.loader.num_workers)
        return batches

    monkeypatch.setattr(tr.Trainer, "_open_batches", spy)
    assert run_cli("train", calli, *UNCACHED, "--loader-workers", "2", "--name", "workers").exit_code == 0

    real_loss = tr.Trainer.step_loss

    def interrupt_at_3(self, step, micro):
        if step == 3:
            raise KeyboardInterrupt
        return real_loss(self, step, micro)

    monkeypatch.setattr(tr.Trainer, "step_loss", interrupt_at_3)
    r = run_cli("train", calli, *UNCACHED, "--loader-workers", "0", "--name", "split")
    assert r.exit_code == 130, r.stderr
    run = [x for x in Registry().all(Run) if x.config.get("name") == "split"][0]
    monkeypatch.setattr(tr.Trainer, "step_loss", real_loss)
    r = run_cli("train", "--resume", run.id, "--loader-workers", "1")  # resumes from step 2's checkpoint
    assert r.exit_code == 0, r.stderr
    assert workers == [2, 0, 1]

    whole = _rows(styler_home, Registry().resolve(Adapter, "workers").run_id)
    split = _rows(styler_home, run.id)
    by_step = {row["step"]: row["loss"] for row in split}  # steps 1-3 of the first try, 3-5 of the resume
    assert [row["step"] for row in whole] == [1, 2, 3, 4, 5]
    assert [by_step[s] for s in range(1, 6)] == [row["loss"] for row in whole]  # bit for bit
    a, b = _weights(styler_home, "workers"), _weights(styler_home, "split")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_an_unreadable_image_in_a_worker_is_one_line(calli, styler_home):
    from registry import Dataset

    ds = Registry().resolve(Dataset, calli)
    images = sorted((styler_home / ds.path / "images").iterdir())
    for p in images:
        p.write_bytes(b"not an image")
    r = run_cli("train", calli, *UNCACHED, "--loader-workers", "1", "--steps", "1")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error: cannot read training image") and "\n" not in r.stderr.strip()
    assert Registry().all(Run)[0].status == "failed"
