"""One device/dtype choice for every command: auto, options over environment over config, the
refusal of a GPU that is not there (exit 2, nothing written), and a fake CUDA to reach its branches."""

from __future__ import annotations

import re

import pytest

from registry import Output, Registry
from styler.config import Settings, save_settings
from styler.device import Placement, resolve_placement, same_placement, weight_dtype
from styler.errors import UsageError
from tests.helpers import run_cli, tree


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes it has two GPUs (nothing is ever placed on them in these tests)."""
    import torch

    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


def test_auto_is_the_cpu_in_fp32_without_a_gpu():
    assert resolve_placement() == Placement("cpu", "fp32")
    assert resolve_placement("auto", "auto") == Placement("cpu", "fp32")
    assert resolve_placement("cpu", "bf16").torch_dtype.__repr__() == "torch.bfloat16"


def test_auto_picks_the_gpu_and_bf16_where_supported(fake_cuda):
    assert resolve_placement() == Placement("cuda:0", "bf16")
    fake_cuda["bf16"] = False
    assert resolve_placement() == Placement("cuda:0", "fp16")
    with pytest.raises(UsageError, match="this GPU has no bf16 support; use --dtype fp16"):
        resolve_placement("cuda", "bf16")
    assert resolve_placement("cuda:1", "fp32") == Placement("cuda:1", "fp32")
    with pytest.raises(UsageError, match=re.escape("--device cuda:2: torch sees 2 GPU(s), cuda:0 … cuda:1")):
        resolve_placement("cuda:2")


def test_option_beats_environment_beats_config(monkeypatch):
    save_settings(Settings(device="cpu", dtype="bf16"))
    assert resolve_placement() == Placement("cpu", "bf16")
    monkeypatch.setenv("STYLER_DTYPE", "fp16")
    assert resolve_placement() == Placement("cpu", "fp16")
    assert resolve_placement(dtype="fp32") == Placement("cpu", "fp32")
    monkeypatch.setenv("STYLER_DEVICE", "cuda")
    with pytest.raises(UsageError, match="STYLER_DEVICE=cuda: torch .* sees no CUDA GPU here; use --device cpu"):
        resolve_placement()
    assert resolve_placement("cpu").device == "cpu"


def test_bad_values_name_the_choices():
    with pytest.raises(UsageError, match=re.escape("--device tpu: unknown device; use auto | cpu | cuda | cuda:N | mps")):
        resolve_placement("tpu")
    with pytest.raises(UsageError, match=re.escape("--dtype int8: unknown dtype; use auto | fp32 | fp16 | bf16")):
        resolve_placement("cpu", "int8")
    save_settings(Settings(device="gpu"))
    with pytest.raises(UsageError, match=r"device = 'gpu' in .*config.toml: unknown device"):
        resolve_placement()


def test_weight_dtype_follows_training_precision():
    import torch

    assert (weight_dtype("no"), weight_dtype("fp16"), weight_dtype("bf16")) == (torch.float32, torch.float16, torch.bfloat16)


def test_same_placement_compares_device_kind_and_dtype():
    assert same_placement({"device": "cuda:0", "dtype": "fp16"}, Placement("cuda:1", "fp16")) is True
    assert same_placement({"device": "cpu", "dtype": "fp32"}, Placement("cpu", "bf16")) is False
    assert same_placement({}, Placement()) is None


COMMANDS = [
    ("generate", "a cat"),
    ("mix", "anime=0.5", "watercolor=0.5", "a cat"),
    ("mix", "anime=0.5", "watercolor=0.5", "a cat", "--sweep", "anime:watercolor"),
    ("transfer", "CONTENT", "a cat"),
    ("grid", "a cat", "--x", "guidance=1,2"),
    ("regen", "OUTPUT"),
    ("eval", "anime", "--clip", "tiny"),
    ("eval", "probe", "anime", "watercolor", "--on", "anime", "--clip", "tiny"),
    ("worker", "--once"),
    ("demo",),
]


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_missing_gpu_is_refused_before_anything_is_written(styled, tmp_path, args):
    from tests.helpers import make_images

    (content,) = make_images(tmp_path / "content", n=1, size=(64, 64))
    r = run_cli("generate", "a dog", "--steps", "2", "--seed", "1", "--json")
    assert r.exit_code == 0, r.stderr
    before_outputs = Registry().all(Output)
    before = tree(styled)
    args = [str(content) if a == "CONTENT" else before_outputs[0].id if a == "OUTPUT" else a for a in args]
    out_dir = tmp_path / "out"
    extra = ["--out", str(out_dir)] if args[0] in ("generate", "mix", "transfer", "grid", "regen") else []
    r = run_cli(*args, *extra, "--device", "cuda", "--steps", "2") if args[0] in ("generate", "mix", "transfer", "grid") \
        else run_cli(*args, *extra, "--device", "cuda")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "error: --device cuda: torch" in r.stderr and "sees no CUDA GPU here; use --device cpu" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert Registry().all(Output) == before_outputs
    assert tree(styled) == before and not out_dir.exists()


def test_every_rendering_command_shows_device_and_dtype_in_help():
    for cmd in (["generate"], ["mix"], ["transfer"], ["grid"], ["regen"], ["eval"], ["eval", "probe"], ["worker"],
                ["demo"]):
        text = run_cli(*cmd, "--help").stdout
        assert "--device" in text and "--dtype" in text, cmd
    for cmd in (["generate"], ["mix"], ["eval"], ["worker"]):
        assert "--batch" in run_cli(*cmd, "--help").stdout, cmd
