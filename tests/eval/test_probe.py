"""The linear style probe: separation, calibration in between, determinism, errors, file round trip."""

from __future__ import annotations

import pytest
import torch

from styler.errors import InputError, UsageError
from styler.eval.probe import StyleProbe, fit_probe, load_probe, predict, save_probe, summarize

D = 8


def clusters(n=40, sep=4.0, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.zeros(D)
    centre[0] = sep
    return {"anime": centre + 0.5 * torch.randn(n, D, generator=g),
            "watercolor": -centre + 0.5 * torch.randn(n, D, generator=g)}


def test_separates_clusters_and_is_unsure_in_the_middle():
    probe = fit_probe(clusters())
    assert isinstance(probe, StyleProbe)
    assert probe.classes == ["anime", "watercolor"]
    assert probe.weight.shape == (2, D) and probe.bias.shape == (2,)
    assert probe.train_accuracy == 1.0 and probe.val_accuracy == 1.0
    middle = predict(probe, torch.zeros(1, D))
    assert middle.shape == (1, 2)
    assert torch.allclose(middle, torch.full((1, 2), 0.5), atol=0.06)
    far = predict(probe, torch.tensor([[6.0] + [0.0] * (D - 1), [-6.0] + [0.0] * (D - 1)]))
    assert far[0, 0] > 0.95 and far[1, 1] > 0.95
    assert torch.allclose(far.sum(1), torch.ones(2))


def test_mixture_of_means_is_intermediate():
    data = clusters()
    probe = fit_probe(data)
    means = {c: e.mean(0) for c, e in data.items()}
    mix = 0.5 * means["anime"] + 0.5 * means["watercolor"]
    lean = 0.7 * means["anime"] + 0.3 * means["watercolor"]
    p_mix, p_lean = predict(probe, mix)[0], predict(probe, lean)[0]
    assert 0.2 < p_mix[0] < 0.8
    pure = predict(probe, means["anime"])[0, 0]
    assert p_mix[0] < p_lean[0] <= pure  # monotone along the line between the means


def test_three_classes_and_summary():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(D)[:3] * 5
    data = {name: c + 0.3 * torch.randn(10, D, generator=g) for name, c in zip(["a", "b", "c"], centres)}
    probe = fit_probe(data, seed=3)
    probs = predict(probe, torch.cat([data["a"][:6], data["c"][:2]]))
    s = summarize(probe, probs)
    assert s["n"] == 8
    assert set(s["mean_probability"]) == {"a", "b", "c"}
    assert s["argmax_share"] == pytest.approx({"a": 0.75, "b": 0.0, "c": 0.25})
    assert sum(s["mean_probability"].values()) == pytest.approx(1.0)
    assert s["mean_probability"]["a"] > s["mean_probability"]["c"] > s["mean_probability"]["b"]


def test_deterministic_with_seed():
    a, b = fit_probe(clusters(), seed=7), fit_probe(clusters(), seed=7)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert (a.train_accuracy, a.val_accuracy) == (b.train_accuracy, b.val_accuracy)


def test_small_classes_train_without_a_validation_split():
    data = clusters(n=20)
    data["watercolor"] = data["watercolor"][:3]
    probe = fit_probe(data)
    assert probe.val_accuracy is None and probe.train_accuracy == 1.0
    # class balance: the small class still wins near its own centre
    assert predict(probe, data["watercolor"].mean(0))[0, 1] > 0.9


def test_errors_name_the_problem():
    data = clusters()
    with pytest.raises(UsageError, match="at least 2 classes.*anime"):
        fit_probe({"anime": data["anime"]})
    with pytest.raises(UsageError, match="watercolor.*1 sample"):
        fit_probe({"anime": data["anime"], "watercolor": data["watercolor"][:1]})
    with pytest.raises(UsageError, match="watercolor.*embedding size"):
        fit_probe({"anime": data["anime"], "watercolor": data["watercolor"][:, :4]})
    probe = fit_probe(data)
    with pytest.raises(UsageError, match="do not fit"):
        predict(probe, torch.zeros(2, D + 1))


def test_save_load_round_trip(tmp_path):
    probe = fit_probe({"水彩": clusters()["anime"], "anime": clusters()["watercolor"]})
    path = save_probe(probe, tmp_path / "sub" / "probe.safetensors")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    back = load_probe(path)
    assert back.classes == ["水彩", "anime"]
    assert torch.equal(back.weight, probe.weight) and torch.equal(back.bias, probe.bias)
    assert (back.train_accuracy, back.val_accuracy) == (probe.train_accuracy, probe.val_accuracy)
    x = torch.randn(5, D)
    assert torch.equal(predict(back, x), predict(probe, x))
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle


def test_load_rejects_missing_and_garbage(tmp_path):
    with pytest.raises(InputError, match="no style probe"):
        load_probe(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="not a style probe"):
        load_probe(bad)
