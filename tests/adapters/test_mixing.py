"""The exact mix: W + Σ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ on every targeted layer, folded once, restored bit for bit."""

import pytest
import torch

from styler.adapters.lora import AdapterData, LoraLayer
from styler.adapters.mixing import MixEntry, WeightMixer, check_weights
from styler.errors import UsageError


@pytest.fixture(scope="module")
def pipe(tiny_base_dir):
    from styler.models.load import load_pipeline
    from styler.models.resolve import BaseModel

    return load_pipeline(BaseModel("tiny", "tiny", tiny_base_dir))


def _fake_lora(pipe, seed, rank, alpha, suffixes, component="unet", scale=0.05):
    """Random LoRA layers on every module of `component` whose name ends with one of `suffixes`."""
    g = torch.Generator().manual_seed(seed)
    root = getattr(pipe, component)
    layers = {}
    for name, m in root.named_modules():
        if not name.endswith(suffixes) or not hasattr(m, "weight"):
            continue
        w = m.weight
        if w.dim() == 2:
            down, up = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
        else:
            down = torch.randn(rank, w.shape[1], *w.shape[2:], generator=g)
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g)
        layers[(component, name)] = LoraLayer(component, name, down * scale, up * scale, alpha)
    return AdapterData("lora", layers)


def _weights(pipe):
    return {(c, n): p.detach().clone() for c in ("unet", "text_encoder")
            for n, p in getattr(pipe, c).named_parameters()}


def test_mix_is_exactly_the_weighted_sum_of_deltas(pipe):
    a = _fake_lora(pipe, 1, rank=4, alpha=2.0, suffixes=("to_q", "to_k", "to_v", "to_out.0"))
    b = _fake_lora(pipe, 2, rank=8, alpha=8.0, suffixes=("to_q", "conv1", "conv2"))  # other ranks and targets
    c = _fake_lora(pipe, 3, rank=2, alpha=1.0, suffixes=("q_proj", "v_proj"), component="text_encoder")
    before = _weights(pipe)
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("a", a, 0.5), MixEntry("b", b, -0.7), MixEntry("c", c, 1.0, te_weight=0.3)])
    after = _weights(pipe)
    touched = set(a.layers) | set(b.layers) | set(c.layers)
    assert any(k[1].endswith("conv1") for k in touched)
    for key, w0 in before.items():
        module_key = (key[0], key[1].rsplit(".", 1)[0])
        if not key[1].endswith(".weight") or module_key not in touched:
            assert torch.equal(after[key], w0), key  # nothing else moves
            continue
        ref = w0.double()
        for data, w in ((a, 0.5), (b, -0.7), (c, 0.3)):
            layer = data.layers.get(module_key)
            if layer is not None:
                d = (layer.up.double().flatten(1) @ layer.down.double().flatten(1)).reshape(w0.shape)
                ref = ref + w * (layer.alpha / layer.rank) * d
        torch.testing.assert_close(after[key].double(), ref, rtol=0, atol=1e-6)
    mixer.restore()


def test_a_hundred_mixes_then_restore_gives_the_original_weights_bit_for_bit(pipe):
    a = _fake_lora(pipe, 4, rank=4, alpha=4.0, suffixes=("to_q", "to_v", "conv1"))
    b = _fake_lora(pipe, 5, rank=6, alpha=3.0, suffixes=("to_k", "to_q", "conv2"))
    before = _weights(pipe)
    mixer = WeightMixer(pipe)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        wa, wb = (torch.rand(2, generator=g) * 3 - 1.5).tolist()
        mixer.apply([MixEntry("a", a, wa), MixEntry("b", b, wb)])
    mixer.restore()
    after = _weights(pipe)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_each_mix_starts_from_the_pristine_weights(pipe):
    a = _fake_lora(pipe, 6, rank=4, alpha=4.0, suffixes=("to_q",))
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("a", a, 1.0)])
    once = _weights(pipe)
    mixer.apply([MixEntry("a", a, 0.3)])
    mixer.apply([MixEntry("a", a, 1.0)])
    assert all(torch.equal(v, once[k]) for k, v in _weights(pipe).items())
    mixer.restore()


def test_zero_weight_and_empty_mix_leave_weights_alone(pipe):
    a = _fake_lora(pipe, 7, rank=4, alpha=4.0, suffixes=("to_q",))
    before = _weights(pipe)
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("a", a, 0.0)])
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())
    mixer.apply([])
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())


def test_wrong_architecture_names_the_layer_and_shapes(pipe):
    name = next(n for n, _ in pipe.unet.named_modules() if n.endswith("attn1.to_q"))
    bad = AdapterData("lora", {("unet", name): LoraLayer("unet", name, torch.zeros(4, 48), torch.zeros(7, 4), 4.0)})
    before = _weights(pipe)
    with pytest.raises(UsageError, match=rf"unet\.{name} is \[\d+, \d+\], the adapter's update is \[7, 48\]"):
        WeightMixer(pipe).apply([MixEntry("bad", bad, 1.0)])
    missing = AdapterData("lora", {("unet", "no.such.layer"): LoraLayer("unet", "no.such.layer", torch.zeros(1, 2), torch.zeros(2, 1), 1.0)})
    with pytest.raises(UsageError, match="no unet module no.such.layer"):
        WeightMixer(pipe).apply([MixEntry("missing", missing, 1.0)])
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())


def test_dora_is_refused_and_duplicates_and_large_weights_are_caught(pipe):
    a = _fake_lora(pipe, 8, rank=2, alpha=2.0, suffixes=("to_q",))
    key, layer = next(iter(a.layers.items()))
    dora = AdapterData("lora", {key: LoraLayer(layer.component, layer.module, layer.down, layer.up, 2.0,
                                               magnitude=torch.ones(layer.up.shape[0]))})
    with pytest.raises(UsageError, match="DoRA"):
        WeightMixer(pipe).apply([MixEntry("d", dora, 0.5)])
    with pytest.raises(UsageError, match="twice"):
        check_weights([MixEntry("a", a, 0.5), MixEntry("a", a, 0.5)], print)
    warnings = []
    check_weights([MixEntry("a", a, 2.5)], warnings.append)
    assert warnings and "2.5" in warnings[0]
