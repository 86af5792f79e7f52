"""Checkpoints: exact resume (weights, optimizer, scheduler, RNG), atomic writes, pruning, errors."""

from __future__ import annotations

import errno
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from styler.errors import InputError, StylerError, WriteError
from styler.train import checkpoint as ckpt


def make(seed: int = 0):
    from diffusers.optimization import get_scheduler

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    return model, opt, sched


def trainable(model) -> dict:
    return dict(model.named_parameters())


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)) for _ in range(n)]


def train(model, opt, sched, data) -> list[float]:
    losses = []
    for x, y in data:
        # dropout-like noise from the global RNG, so RNG restore matters for the result
        noise = torch.rand(5, 4) * 0.01
        loss = torch.nn.functional.mse_loss(model(x + noise), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def save(run_dir: Path, step: int, model, opt, sched, **state) -> Path:
    return ckpt.save_checkpoint(run_dir, step, trainable=trainable(model), optimizer=opt,
                                lr_scheduler=sched, state={"loss": 0.5, **state})


def test_resume_is_exact(tmp_path):
    data = batches(6)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    model, opt, sched = make()
    train(model, opt, sched, data[:3])
    path = save(tmp_path, 3, model, opt, sched, epoch=1, names=("a", "b"))
    assert path == tmp_path / "checkpoints" / "step-0000003"
    expected_draws = draws()
    losses = train(model, opt, sched, data[3:])
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    lr = sched.get_last_lr()
    opt_state = opt.state_dict()

    random.seed(999), np.random.seed(999), torch.manual_seed(999)
    model2, opt2, sched2 = make(seed=7)  # different init: everything must come from the file
    state = ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2,
                                 lr_scheduler=sched2)
    assert state == {"loss": 0.5, "epoch": 1, "names": ("a", "b"), "step": 3}
    assert draws() == expected_draws
    # draws() consumed RNG; rewind by loading again, then train the same steps
    ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2, lr_scheduler=sched2)
    draws()
    assert train(model2, opt2, sched2, data[3:]) == losses
    for k, v in model2.named_parameters():
        assert torch.equal(v, params[k]), k
    assert sched2.get_last_lr() == lr
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)  # tuples survive JSON
    for i, s in opt_state["state"].items():
        s2 = opt2.state_dict()["state"][i]
        assert s2["step"].dtype == s["step"].dtype and torch.equal(s2["step"], s["step"])
        assert torch.equal(s2["exp_avg_sq"], s["exp_avg_sq"])


def test_files_and_no_pickle_format(tmp_path):
    model, opt, sched = make()
    train(model, opt, sched, batches(2))
    path = save(tmp_path, 20, model, opt, sched)
    assert path.name == "step-0000020"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["trainable.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
         "rng.safetensors", "rng.json", "state.json", "COMPLETE"])
    opt_json = json.loads((path / "optimizer.json").read_text())
    assert opt_json["state"]["0"]["step"] == {"__tensor__": "state.0.step"}
    assert json.loads((path / "scheduler.json").read_text())["lr_lambdas"] == [None]
    assert ckpt.read_checkpoint_state(path) == {"loss": 0.5, "step": 20}
    assert not list((tmp_path / "checkpoints").glob("*.tmp-*"))


def test_without_rng(tmp_path):
    model, opt, sched = make()
    path = ckpt.save_checkpoint(tmp_path, 1, trainable=trainable(model), optimizer=opt,
                                lr_scheduler=sched, state={}, rng=False)
    assert not (path / "rng.json").exists()
    model2, opt2, sched2 = make(1)
    assert ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2,
                                lr_scheduler=sched2) == {"step": 1}


def test_resave_same_step_replaces(tmp_path):
    model, opt, sched = make()
    save(tmp_path, 5, model, opt, sched, tag="first")
    save(tmp_path, 5, model, opt, sched, tag="second")
    assert ckpt.read_checkpoint_state(ckpt.latest_checkpoint(tmp_path))["tag"] == "second"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000005"]


def test_marker_semantics_and_prune(tmp_path):
    model, opt, sched = make()
    assert ckpt.latest_checkpoint(tmp_path) is None and ckpt.list_checkpoints(tmp_path) == []
    for step in (10, 20, 30, 40, 100):
        save(tmp_path, step, model, opt, sched)
    root = tmp_path / "checkpoints"
    (root / "step-0000200").mkdir()  # newer but incomplete: no marker
    (root / "step-0000200" / "state.json").write_text("{}")
    (root / "step-0000300.tmp-abc123").mkdir()  # a crashed save
    (root / "step-0000300.tmp-abc123" / "COMPLETE").write_text("")
    (root / "notes.txt").write_text("mine")  # not ours: left alone
    assert ckpt.latest_checkpoint(tmp_path) == root / "step-0000100"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-0000010", "step-0000020", "step-0000030", "step-0000040", "step-0000100"]
    with pytest.raises(InputError, match="incomplete"):
        ckpt.read_checkpoint_state(root / "step-0000200")

    removed = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert {p.name for p in removed} == {"step-0000010", "step-0000020", "step-0000030",
                                         "step-0000200", "step-0000300.tmp-abc123"}
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt", "step-0000040", "step-0000100"]
    assert ckpt.prune_checkpoints(tmp_path, keep=2) == []


def test_disk_full_keeps_last_good(tmp_path, monkeypatch):
    model, opt, sched = make()
    save(tmp_path, 10, model, opt, sched)
    real, calls = ckpt._write_file, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", failing)
    with pytest.raises(WriteError) as e:
        save(tmp_path, 20, model, opt, sched)
    msg = e.value.message
    assert msg == ("could not save the checkpoint at step 20 (No space left on device); "
                   "the last good checkpoint is step 10")
    assert "\n" not in msg
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-0000010"]
    model2, opt2, sched2 = make(3)
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), trainable=trainable(model2),
                                optimizer=opt2, lr_scheduler=sched2)["step"] == 10


def test_disk_full_first_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save", full)
    model, opt, sched = make()
    with pytest.raises(WriteError, match=r"step 7 \(No space left on device\); there is no"):
        save(tmp_path, 7, model, opt, sched)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_mismatched_trainable(tmp_path):
    model, opt, sched = make()
    path = save(tmp_path, 1, model, opt, sched)
    model2, opt2, sched2 = make()
    params = trainable(model2)
    before = {k: v.detach().clone() for k, v in params.items()}
    renamed = {("x." + k if k == "0.weight" else k): v for k, v in params.items()}
    with pytest.raises(InputError, match=r"'0.weight' is in the checkpoint but not") as e:
        ckpt.load_checkpoint(path, trainable=renamed, optimizer=opt2, lr_scheduler=sched2)
    assert str(path) in e.value.message and "\n" not in e.value.message
    fewer = {k: v for k, v in params.items() if k != "2.bias"}
    with pytest.raises(InputError, match="'2.bias' is in the checkpoint"):
        ckpt.load_checkpoint(path, trainable=fewer, optimizer=opt2, lr_scheduler=sched2)
    more = {**params, "extra": torch.zeros(3)}
    with pytest.raises(InputError, match="'extra' is not in the checkpoint"):
        ckpt.load_checkpoint(path, trainable=more, optimizer=opt2, lr_scheduler=sched2)
    shaped = {**params, "2.bias": torch.zeros(3)}
    with pytest.raises(InputError, match=r"'2.bias' has shape \[2\] in the checkpoint but \[3\]"):
        ckpt.load_checkpoint(path, trainable=shaped, optimizer=opt2, lr_scheduler=sched2)
    # nothing was changed by the failed loads
    for k, v in params.items():
        assert torch.equal(v, before[k])


def test_optimizer_param_count_mismatch(tmp_path):
    model, opt, sched = make()
    path = save(tmp_path, 1, model, opt, sched)
    model2, _, _ = make()
    opt2 = torch.optim.AdamW(list(model2.parameters())[:2], lr=1e-2)
    with pytest.raises(InputError, match=r"optimizer state for 4 parameters .* has 2"):
        ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2, lr_scheduler=None)


def test_missing_and_damaged_files(tmp_path):
    model, opt, sched = make()
    path = save(tmp_path, 1, model, opt, sched)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(InputError, match=re.escape(f"checkpoint {path} is missing optimizer.safe")):
        ckpt.load_checkpoint(path, trainable=trainable(model), optimizer=opt, lr_scheduler=sched)
    path = save(tmp_path, 2, model, opt, sched)
    (path / "trainable.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="trainable.safetensors is unreadable"):
        ckpt.load_checkpoint(path, trainable=trainable(model), optimizer=opt, lr_scheduler=sched)
    with pytest.raises(InputError, match="does not exist"):
        ckpt.read_checkpoint_state(tmp_path / "checkpoints" / "step-0000999")


def test_unserialisable_state_names_the_key(tmp_path):
    model, opt, sched = make()
    sched.lr_lambdas[0] = _Lambda()  # a callable object: LambdaLR saves its __dict__
    with pytest.raises(StylerError, match=r"lr_scheduler\.lr_lambdas\.0\.fn \(function\) is not JSON-serialisable"):
        save(tmp_path, 1, model, opt, sched)
    sched.lr_lambdas[0] = lambda step: 1.0
    with pytest.raises(StylerError, match=r"training state: state\.bad \(object\)"):
        save(tmp_path, 1, model, opt, sched, bad=object())
    assert list((tmp_path / "checkpoints").glob("*")) == []


def _noop():
    pass


class _Lambda:
    def __init__(self):
        self.scale, self.fn = 2.0, _noop

    def __call__(self, step):
        return self.scale


def test_callable_lr_lambda_round_trips(tmp_path):
    model, opt, sched = make()
    lam = _Lambda()
    del lam.fn
    sched.lr_lambdas[0] = lam
    path = save(tmp_path, 1, model, opt, sched)
    model2, opt2, sched2 = make()
    lam2 = _Lambda()
    lam2.scale = 9.0
    sched2.lr_lambdas[0] = lam2
    ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2, lr_scheduler=sched2)
    assert lam2.scale == 2.0


def test_module_never_pickles():
    source = Path(ckpt.__file__).read_text(encoding="utf-8")
    for banned in ("pickle", "torch.load", "torch.save"):
        assert banned not in source, banned


def _scaled_steps(model, opt, sched, scaler, data) -> list[float]:
    """fp16-style steps: the loss scale starts near fp32's limit and doubles every step, so some
    steps overflow, are skipped and halve the scale — the weights depend on the scaler's history."""
    scales = []
    for x, y in data:
        loss = torch.nn.functional.mse_loss(model(x), y) * 1e3
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        scales.append(scaler.get_scale())
    return scales


def _scaler():
    return torch.amp.GradScaler("cpu", init_scale=2.0**112, growth_factor=2.0, backoff_factor=0.5, growth_interval=1)


def test_grad_scaler_state_round_trips(tmp_path):
    data = batches(10)
    model, opt, sched = make()
    scaler = _scaler()
    _scaled_steps(model, opt, sched, scaler, data[:4])
    path = ckpt.save_checkpoint(tmp_path, 4, trainable=trainable(model), optimizer=opt, lr_scheduler=sched,
                                state={}, scaler=scaler)
    saved = json.loads((path / "scaler.json").read_text())
    assert saved["scale"] == scaler.get_scale() and "_growth_tracker" in saved
    whole_scales = _scaled_steps(model, opt, sched, scaler, data[4:])
    whole = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert any(b < a for a, b in zip(whole_scales, whole_scales[1:]))  # it overflowed, skipped, backed off

    def resumed(restore: bool):
        model2, opt2, sched2 = make(seed=5)
        scaler2 = _scaler()
        ckpt.load_checkpoint(path, trainable=trainable(model2), optimizer=opt2, lr_scheduler=sched2,
                             scaler=scaler2 if restore else None)
        return _scaled_steps(model2, opt2, sched2, scaler2, data[4:]), dict(model2.named_parameters())

    scales, params = resumed(True)
    assert scales == whole_scales
    for k, v in params.items():
        assert torch.equal(v, whole[k]), k
    scales, params = resumed(False)  # a fresh scaler: another scale history, other skipped steps
    assert scales != whole_scales
    assert any(not torch.equal(v, whole[k]) for k, v in params.items())


def test_scaler_absent_disabled_or_damaged(tmp_path):
    model, opt, sched = make()
    off = torch.amp.GradScaler("cpu", enabled=False)  # what bf16/fp32 training has: an empty state
    path = ckpt.save_checkpoint(tmp_path, 1, trainable=trainable(model), optimizer=opt, lr_scheduler=sched,
                                state={}, scaler=off)
    assert not (path / "scaler.json").exists()
    on = _scaler()
    ckpt.load_checkpoint(path, trainable=trainable(model), optimizer=opt, lr_scheduler=sched, scaler=on)
    assert on.get_scale() == 2.0**112  # nothing saved: left as it was
    path = ckpt.save_checkpoint(tmp_path, 2, trainable=trainable(model), optimizer=opt, lr_scheduler=sched,
                                state={}, scaler=_scaler())
    (path / "scaler.json").write_text('{"scale": "big"}')
    with pytest.raises(InputError, match="scaler.json is damaged"):
        ckpt.load_checkpoint(path, trainable=trainable(model), optimizer=opt, lr_scheduler=sched, scaler=_scaler())
    (path / "scaler.json").unlink()
    with pytest.raises(InputError, match="missing scaler.json"):
        ckpt.load_checkpoint(path, trainable=trainable(model), optimizer=opt, lr_scheduler=sched, scaler=_scaler())
