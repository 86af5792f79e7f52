"""The exact mix: W + Σ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ on every targeted layer, folded once, restored bit for bit."""

import pytest
import torch

from styler.adapters.lora import AdapterData, LoraLayer
from styler.adapters.mixing import MixEntry, WeightMixer, check_weights
from styler.errors import UsageError

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


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


def test_duplicates_and_large_weights_are_caught(pipe):
    a = _fake_lora(pipe, 8, rank=2, alpha=2.0, suffixes=("to_q",))
    with pytest.raises(UsageError, match="twice"):
        check_weights([MixEntry("a", a, 0.5), MixEntry("a", a, 0.5)], print)
    warnings = []
    check_weights([MixEntry("a", a, 2.5)], warnings.append)
    assert warnings and "2.5" in warnings[0]


# ---------------------------------------------------------------- DoRA

DORA_MODULES = ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",  # Linear
                "down_blocks.0.resnets.0.conv1",  # Conv2d 3x3
                "up_blocks.1.attentions.0.proj_in")


def _dora(pipe, seed=11):
    """DoRA layers on two UNet modules and one text-encoder module, magnitudes near the weight norms."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for comp, name in [("unet", m) for m in DORA_MODULES] + [("text_encoder", "encoder.layers.0.self_attn.q_proj")]:
        w = getattr(pipe, comp).get_submodule(name).weight
        down = torch.randn(2, *w.shape[1:], generator=g) * 0.3
        up = torch.randn(w.shape[0], 2, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.3
        norm = w.detach().flatten(1).norm(dim=1)
        layers[(comp, name)] = LoraLayer(comp, name, down, up, 3.0, norm * (1 + 0.3 * torch.rand(norm.shape, generator=g)))
    return AdapterData("lora", layers)


def _inputs(pipe, key, seed=0):
    mod = getattr(pipe, key[0]).get_submodule(key[1])
    mod = getattr(mod, "base_layer", mod)
    g = torch.Generator().manual_seed(seed)
    if isinstance(mod, torch.nn.Conv2d):
        return torch.randn(2, mod.in_channels, 8, 8, generator=g)
    return torch.randn(3, 5, mod.in_features, generator=g)


def test_a_dora_adapter_folds_to_what_peft_computes_unfused(pipe, tmp_path):
    """peft's own DoRA forward, loaded from the peft-format file by diffusers' load_lora_weights and
    scaled by set_adapters, against styler's fold W' = m·(W + w·ΔW)/‖W + w·ΔW‖ per output row."""
    from styler.adapters.formats import write_adapter

    data = _dora(pipe)
    path = write_adapter(data, tmp_path / "dora.safetensors", "peft")
    before = _weights(pipe)
    for w in (1.0, 0.5, -0.7, 1.8):
        mixer = WeightMixer(pipe)
        mixer.apply([MixEntry("d", data, w)])
        with torch.no_grad():
            folded = {k: getattr(pipe, k[0]).get_submodule(k[1])(_inputs(pipe, k)) for k in data.layers}
        mixer.restore()
        assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())
        pipe.load_lora_weights(str(path), adapter_name="d")
        try:
            pipe.set_adapters(["d"], [w])
            for key in data.layers:
                mod = getattr(pipe, key[0]).get_submodule(key[1])
                assert mod.use_dora["d"], key  # peft's DoRA layer, not a plain LoRA
                with torch.no_grad():
                    ref = mod(_inputs(pipe, key))
                torch.testing.assert_close(folded[key], ref, rtol=1e-5, atol=2e-5, msg=f"{key} at weight {w}")
        finally:
            pipe.unload_lora_weights()
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())


def test_dora_formula_and_weight_zero(pipe):
    data = _dora(pipe, seed=12)
    before = _weights(pipe)
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("d", data, 0.6, te_weight=0.25)])
    for key, layer in data.layers.items():
        w = 0.6 if key[0] == "unet" else 0.25
        v = before[(key[0], key[1] + ".weight")].double() + w * layer.delta().double()
        ref = v * (layer.magnitude.double() / v.flatten(1).norm(dim=1)).reshape(-1, *[1] * (v.dim() - 1))
        after = getattr(pipe, key[0]).get_submodule(key[1]).weight
        torch.testing.assert_close(after.double(), ref, rtol=0, atol=1e-6)
        bias = key[1] + ".bias"
        if (key[0], bias) in before:
            assert torch.equal(_weights(pipe)[(key[0], bias)], before[(key[0], bias)])  # bias unchanged
    mixer.apply([MixEntry("d", data, 0.0)])  # weight 0: the base as it is
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())
    mixer.restore()


def test_dora_mixes_exactly_with_adapters_on_other_layers_and_is_refused_on_shared_ones(pipe):
    dora = _dora(pipe, seed=13)
    other = _fake_lora(pipe, 14, rank=2, alpha=2.0, suffixes=("to_v",))  # no module in common
    assert not set(other.layers) & set(dora.layers)
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("d", dora, 0.8)])
    alone = _weights(pipe)
    mixer.apply([MixEntry("o", other, 0.5)])
    other_alone = _weights(pipe)
    mixer.apply([MixEntry("d", dora, 0.8), MixEntry("o", other, 0.5)])
    both = _weights(pipe)
    for k, v in both.items():
        module = (k[0], k[1].rsplit(".", 1)[0])
        expect = alone[k] if module in dora.layers else other_alone[k]
        assert torch.equal(v, expect), k
    mixer.restore()
    shared = _fake_lora(pipe, 15, rank=2, alpha=2.0, suffixes=("attn1.to_q",))
    before = _weights(pipe)
    for entries in ([MixEntry("d", dora, 0.8), MixEntry("s", shared, 0.5)],
                    [MixEntry("s", shared, 0.5), MixEntry("d", dora, 0.8)],
                    [MixEntry("d", dora, 0.8), MixEntry("d2", _dora(pipe, seed=16), 0.3)]):
        with pytest.raises(UsageError) as err:
            WeightMixer(pipe).apply(entries)
        assert "\n" not in err.value.message and "is a DoRA adapter and" in err.value.message
        assert "no exact mix" in err.value.message and f"unet.{DORA_MODULES[0]}" in err.value.message
    assert all(torch.equal(v, before[k]) for k, v in _weights(pipe).items())
    mixer.apply([MixEntry("d", dora, 0.8), MixEntry("s", shared, 0.0)])  # weight 0 takes no part
    assert all(torch.equal(v, alone[k]) for k, v in _weights(pipe).items())
    mixer.restore()
