"""LyCORIS LoHa and LoKr files on the tiny base, through the CLI: import, the ΔW styler folds against
the formulas computed here in float64 with numpy (not styler's code), exact mixes with a LoRA,
rendering, kohya export (format, keys and alpha kept, byte-deterministic) and the refusals.

The formulas and key layouts are LyCORIS's (lycoris/functional/loha.py, lokr.py, modules/loha.py,
lokr.py at KohakuBlueleaf/LyCORIS f49d30d670591ec8841d241d79aaa8449b30a715) and what ComfyUI
applies (comfy/weight_adapter/loha.py at 17adbb5c, lokr.py at 179c2d35): LoKr's alpha/rank only
with a low-rank factor, scale 1 when both are whole, and no alpha meaning scale 1.

Interop, run by hand in a scratch folder (LyCORIS and ComfyUI are not styler dependencies) on the
kohya exports of this file's `_loha_file` / `_lokr_file`, 2026-12-01, torch 2.13 CPU:
- LyCORIS f49d30d6: `lycoris.kohya.create_network_from_weights` on the tiny UNet and text encoder,
  each module's forward-path ΔW (`get_weight(shape) * scalar`) vs styler's ΔW and folded weights:
  max |difference| 2.4e-7 (LoHa: 1.2e-7, all 5 layers, CP conv included). LyCORIS's own loader
  cannot rebuild a CP LoKr (`make_module_from_state_dict` takes its rank from lokr_w2_a.size(1),
  which in the CP layout is the output factor), so that layer was checked on a `LokrModule` built as
  its trainer builds one (lora_dim = the core's rank, use_tucker) with the file's tensors copied in.
- ComfyUI (loha.py 17adbb5c, lokr.py 179c2d35): `LoHaAdapter/LoKrAdapter.load` +
  `calculate_weight`, alpha as comfy/lora.py `load_lora` reads it: max |difference| 1.2e-7 on every
  layer but the CP LoKr conv, where ComfyUI itself fails (`torch.kron` of its non-contiguous einsum
  result: "view size is not compatible", logged, weight left unchanged)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from registry import Adapter, BlobStore, Registry
from styler.models.tiny import UNET_CONFIG
from tests.helpers import run_cli, tree

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
K = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
K2 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # [W0, 64]
FF = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj"  # [8 W0, W0]
CONV1 = "down_blocks.0.resnets.0.conv1"  # [W0, W0, 3, 3]
CONV2 = "down_blocks.0.resnets.0.conv2"
W0 = UNET_CONFIG["block_out_channels"][0]  # the tiny UNet's width at down_blocks.0
MID1 = "mid_block.resnets.0.conv1"  # [128, 128, 3, 3]
MID2 = "mid_block.resnets.0.conv2"
TE_Q = "encoder.layers.0.self_attn.q_proj"  # [64, 64]
TE_O = "encoder.layers.0.self_attn.out_proj"
FAST = ["--steps", "3", "--seed", "7"]


def _stem(comp: str, module: str) -> str:
    return ("lora_unet_" if comp == "unet" else "lora_te_text_model_") + module.replace(".", "_")


def _rand(g, *shape, scale=0.3):
    return (torch.randn(*shape, generator=g) * scale).contiguous()


def _loha_file(path):
    """LoHa layers as LyCORIS writes them: Linear, a flat 3×3 conv, a CP (tucker) conv, text encoder."""
    g = torch.Generator().manual_seed(1)
    t = {}
    big = lambda *shape: _rand(g, *shape, scale=0.6)  # noqa: E731  (a Hadamard product of small factors is smaller)
    for comp, module, out, inn, alpha in (("unet", Q, W0, W0, 2.0), ("unet", K2, W0, 64, 4.0),
                                          ("unet", CONV1, W0, W0 * 9, 1.0), ("text_encoder", TE_Q, 64, 64, 3.0)):
        s = _stem(comp, module)
        t.update({f"{s}.hada_w1_a": big(out, 4), f"{s}.hada_w1_b": big(4, inn),
                  f"{s}.hada_w2_a": big(out, 4), f"{s}.hada_w2_b": big(4, inn), f"{s}.alpha": torch.tensor(alpha)})
    s = _stem("unet", K2)  # civitai files are mostly fp16
    t.update({k: v.half() for k, v in t.items() if k.startswith(s + ".hada_")})
    s = _stem("unet", MID1)
    t.update({f"{s}.hada_t1": _rand(g, 4, 4, 3, 3), f"{s}.hada_w1_a": _rand(g, 4, 128), f"{s}.hada_w1_b": _rand(g, 4, 128),
              f"{s}.hada_t2": _rand(g, 4, 4, 3, 3), f"{s}.hada_w2_a": _rand(g, 4, 128), f"{s}.hada_w2_b": _rand(g, 4, 128),
              f"{s}.alpha": torch.tensor(2.0)})
    save_file(t, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "loha"}'})
    return t


def _lokr_file(path):
    """LoKr layers: whole w1 + low-rank w2, both low-rank, both whole (scale 1 whatever alpha), a flat
    3×3 conv, a CP conv, and a text-encoder layer without alpha."""
    g = torch.Generator().manual_seed(2)
    t = {}
    big = lambda *shape: _rand(g, *shape, scale=0.5)  # noqa: E731  (large enough to see in an image)
    s = _stem("unet", Q)
    f = W0 // 4  # w1 is 4 x 4 (16 x 4 for FF), so w2 is f x f
    t.update({f"{s}.lokr_w1": big(4, 4), f"{s}.lokr_w2_a": big(f, 2), f"{s}.lokr_w2_b": big(2, f),
              f"{s}.alpha": torch.tensor(1.0)})
    s = _stem("unet", FF)
    t.update({f"{s}.lokr_w1_a": big(16, 2), f"{s}.lokr_w1_b": big(2, 4), f"{s}.lokr_w2_a": big(2 * f, 2),
              f"{s}.lokr_w2_b": big(2, f), f"{s}.alpha": torch.tensor(4.0)})
    s = _stem("unet", K)
    t.update({f"{s}.lokr_w1": big(4, 4), f"{s}.lokr_w2": big(f, f), f"{s}.alpha": torch.tensor(7.0)})
    s = _stem("unet", CONV2)
    t.update({f"{s}.lokr_w1": big(4, 4), f"{s}.lokr_w2_a": big(f, 2), f"{s}.lokr_w2_b": big(2, f * 9),
              f"{s}.alpha": torch.tensor(1.0)})
    s = _stem("unet", MID2)
    t.update({f"{s}.lokr_w1": big(8, 8), f"{s}.lokr_t2": big(2, 2, 3, 3), f"{s}.lokr_w2_a": big(2, 16),
              f"{s}.lokr_w2_b": big(2, 16), f"{s}.alpha": torch.tensor(2.0)})
    s = _stem("text_encoder", TE_O)
    t.update({f"{s}.lokr_w1": big(8, 8), f"{s}.lokr_w2_a": big(8, 2), f"{s}.lokr_w2_b": big(2, 8)})
    save_file(t, str(path))
    return t


def _lora_file(path):
    g = torch.Generator().manual_seed(3)
    t = {}
    for module, out, inn in ((Q, W0, W0), (MID1, 128, 128)):
        s = _stem("unet", module)
        down = _rand(g, 4, inn) if module == Q else _rand(g, 4, inn, 3, 3)
        up = _rand(g, out, 4) if module == Q else _rand(g, out, 4, 1, 1)
        t.update({f"{s}.lora_down.weight": down, f"{s}.lora_up.weight": up, f"{s}.alpha": torch.tensor(2.0)})
    save_file(t, str(path))
    return t


# ---------------------------------------------------------------- ΔW, independently (numpy, float64)


def _np(t):
    return t.double().numpy()


def _cp(core, a, b):
    """Σᵢⱼ core[i, j] · a[i] ⊗ b[j] -> [out, in, kh, kw], by two tensordots."""
    inner = np.tensordot(core, b, axes=([1], [0]))  # [i, kh, kw, in]
    return np.tensordot(a, inner, axes=([0], [0])).transpose(0, 3, 1, 2)  # [out, kh, kw, in] -> [out, in, kh, kw]


def _expected(tensors: dict, stem: str, shape) -> np.ndarray:
    p = {k[len(stem) + 1:]: v for k, v in tensors.items() if k.startswith(stem + ".")}
    if "hada_w1_a" in p:
        rank = p["hada_w1_b"].shape[0]
        scale = float(p["alpha"]) / rank if "alpha" in p else 1.0
        if "hada_t1" in p:
            m1 = _cp(_np(p["hada_t1"]), _np(p["hada_w1_a"]), _np(p["hada_w1_b"]))
            m2 = _cp(_np(p["hada_t2"]), _np(p["hada_w2_a"]), _np(p["hada_w2_b"]))
        else:
            m1 = _np(p["hada_w1_a"]) @ _np(p["hada_w1_b"])
            m2 = _np(p["hada_w2_a"]) @ _np(p["hada_w2_b"])
        return (scale * m1 * m2).reshape(shape)
    if "lora_down.weight" in p:
        down, up = _np(p["lora_down.weight"]), _np(p["lora_up.weight"])
        d = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        return (float(p["alpha"]) / down.shape[0] * d).reshape(shape)
    low = [k for k in ("lokr_w1_b", "lokr_w2_b") if k in p]
    rank = p[low[-1]].shape[0] if low else None
    scale = float(p["alpha"]) / rank if rank and "alpha" in p else 1.0
    w1 = _np(p["lokr_w1"]) if "lokr_w1" in p else _np(p["lokr_w1_a"]) @ _np(p["lokr_w1_b"])
    if "lokr_w2" in p:
        w2 = _np(p["lokr_w2"])
    elif "lokr_t2" in p:
        w2 = _cp(_np(p["lokr_t2"]), _np(p["lokr_w2_a"]), _np(p["lokr_w2_b"]))
    else:
        w2 = _np(p["lokr_w2_a"]) @ _np(p["lokr_w2_b"])
    if len(shape) == 4 and w2.ndim == 2:  # a flat conv w2: [b, d·kh·kw] -> [b, d, kh, kw]
        w2 = w2.reshape(w2.shape[0], -1, *shape[2:])
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return (scale * np.kron(w1, w2)).reshape(shape)


def _stems(tensors) -> set[str]:
    return {k.rsplit(".", 2 if k.endswith(".weight") else 1)[0] for k in tensors}


def _module_of(stem: str, modules) -> tuple[str, str]:
    comp = "unet" if stem.startswith("lora_unet_") else "text_encoder"
    (module,) = [m for m in modules if _stem(comp, m) == stem]
    return comp, module


ALL = (Q, K, K2, FF, CONV1, CONV2, MID1, MID2, TE_Q, TE_O)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_base_dir):
    """A home with the tiny base and the three files imported through the CLI, built once."""
    from tests.helpers import home_env, link_tiny

    root = tmp_path_factory.mktemp("lycoris")
    home, made = root / "home", {}
    with home_env(home):
        link_tiny(home, tiny_base_dir)
        for name, make in (("loha", _loha_file), ("lokr", _lokr_file), ("lora", _lora_file)):
            path = root / f"{name}.safetensors"
            made[name] = (path, make(path))
            r = run_cli("adapters", "import", path, name, "--base", "tiny", "--json")
            assert r.exit_code == 0, r.stderr
    return home, made


@pytest.fixture
def files(styler_home, imported):
    """This test's own copy of the imported home; {name: (source file, its tensors)}."""
    shutil.copytree(imported[0], styler_home, symlinks=True)
    return imported[1]


def _session():
    from styler.generate.engine import Session

    return Session.open("tiny")


def _pristine(pipe):
    return {(c, m): getattr(pipe, c).get_submodule(m).weight.detach().double().clone() for c, m in _keys()}


def _keys():
    return [("text_encoder" if m.startswith("encoder.") else "unet", m) for m in ALL]


def test_imported_loha_and_lokr_fold_their_formulas_and_mix_exactly_with_a_lora(files):
    from styler.generate.engine import AdapterChoice

    reg = Registry()
    loha, lokr, lora = (reg.resolve(Adapter, n) for n in ("loha", "lokr", "lora"))
    assert (loha.method, loha.rank, loha.alpha) == ("loha", 4, 4.0)
    assert (lokr.method, lokr.rank) == ("lokr", 2) and lora.method == "imported"
    assert loha.metadata["layer_kinds"] == {"loha": 5} and lokr.metadata["layer_kinds"] == {"lokr": 6}
    session = _session()
    pipe = session.pipe
    w0 = _pristine(pipe)
    expected = {}
    for name, (_, tensors) in files.items():
        for stem in _stems(tensors):
            key = _module_of(stem, ALL)
            expected[name, key] = _expected(tensors, stem, tuple(w0[key].shape))
    assert len([k for k in expected if k[0] == "loha"]) == 5 and len([k for k in expected if k[0] == "lokr"]) == 6

    def check(weights: dict):
        for key, w in w0.items():
            want = w.numpy() + sum(weight * expected[name, key] for name, weight in weights.items()
                                   if (name, key) in expected)
            have = getattr(pipe, key[0]).get_submodule(key[1]).weight.detach().double().numpy()
            assert np.abs(have - want).max() < 1e-5, key
            touched = any((n, key) in expected for n in weights)
            assert touched != np.array_equal(have, w.numpy()), key  # nothing else moves

    session.apply([AdapterChoice(loha, 1.0)], reg)
    check({"loha": 1.0})
    session.apply([AdapterChoice(lokr, 1.0)], reg)
    check({"lokr": 1.0})
    # a LoHa with a LoRA on the same modules (to_q, the CP conv) and a LoKr with both on to_q
    session.apply([AdapterChoice(loha, 0.5), AdapterChoice(lora, -0.7)], reg)
    check({"loha": 0.5, "lora": -0.7})
    session.apply([AdapterChoice(loha, 0.3), AdapterChoice(lokr, 0.8), AdapterChoice(lora, 0.5, te_weight=2.0)], reg)
    check({"loha": 0.3, "lokr": 0.8, "lora": 0.5})
    session.mixer.restore()
    assert all(torch.equal(getattr(pipe, c).get_submodule(m).weight.double(), w0[c, m]) for c, m in w0)


def test_rendering_with_a_loha_or_lokr_changes_the_image(files):
    from tests.generate.test_generate_cli import ids, pixels

    home = Registry().home
    (base,) = ids(run_cli("generate", "a cat", *FAST, "--json"))
    (loha,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "loha=1", "--json"))
    (mixed,) = ids(run_cli("mix", "lokr=0.5", "lora=0.5", "a cat", *FAST, "--json"))
    ref = pixels(home, base)
    assert np.abs(pixels(home, loha) - ref).mean() > 5 and np.abs(pixels(home, mixed) - ref).mean() > 5  # (9.8, 22.3)


@pytest.mark.parametrize("name", ["loha", "lokr"])
def test_kohya_export_keeps_the_format_keys_and_alpha_byte_for_byte(files, tmp_path, name):
    src_path, src = files[name]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out in (a, b):
        r = run_cli("adapters", "export", name, "--format", "kohya", "--out", out)
        assert r.exit_code == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    back = load_file(str(a))
    assert set(back) == set(src) | {k.rsplit(".", 1)[0] + ".alpha" for k in src if ".lokr_" in k or ".hada_" in k}
    for key, t in src.items():  # the factors exactly as the source file has them, flat conv factors too
        assert back[key].dtype == t.dtype and torch.equal(back[key], t), key
    with safe_open(str(a), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "lycoris.kohya" and json.loads(meta["ss_network_args"])["algo"] == name
    # what it exports imports as the same adapter: the re-export is the same file
    assert run_cli("adapters", "import", a, f"{name}-back", "--base", "tiny").exit_code == 0
    c = tmp_path / "c.safetensors"
    assert run_cli("adapters", "export", f"{name}-back", "--format", "kohya", "--out", c).exit_code == 0
    assert load_file(str(c)).keys() == back.keys()
    assert all(torch.equal(load_file(str(c))[k], v) for k, v in back.items())
    assert Registry().resolve(Adapter, f"{name}-back").method == name


def test_what_has_no_exact_loha_form_is_refused_with_the_way_out(files, tmp_path):
    before = len(Registry().all(Adapter))
    for fmt in ("peft", "diffusers"):
        r = run_cli("adapters", "export", "loha", "--format", fmt, "--out", tmp_path / f"x-{fmt}.safetensors")
        assert r.exit_code == 2 and "LoHa layers" in r.stderr and "--format kohya" in r.stderr, r.stderr
        assert not (tmp_path / f"x-{fmt}.safetensors").exists()
    r = run_cli("adapters", "merge", "m", "loha=0.5", "lora=0.5")
    assert r.exit_code == 2 and "not B·A" in r.stderr and "--method svd" in r.stderr
    assert len(Registry().all(Adapter)) == before
    r = run_cli("adapters", "merge", "m", "lokr=1", "lora=1", "--method", "svd", "--rank", "64", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["relative_error"] < 1e-5  # rank 64 holds every layer of these here exactly
    from styler.adapters.formats import read_adapter

    reg = Registry()
    merged = read_adapter(BlobStore(reg.home).path(reg.resolve(Adapter, "m").blob))
    lokr = read_adapter(BlobStore(reg.home).path(reg.resolve(Adapter, "lokr").blob))
    lora = read_adapter(BlobStore(reg.home).path(reg.resolve(Adapter, "lora").blob))
    for key, layer in merged.layers.items():
        want = sum(d.layers[key].delta() for d in (lokr, lora) if key in d.layers)
        assert layer.kind == "lora" and torch.allclose(layer.delta(), want, atol=1e-5), key


def _refused(path, fragment):
    home = Registry().home
    blobs = tree(home / "blobs")
    r = run_cli("adapters", "import", path, "bad", "--base", "tiny")
    assert r.exit_code == 2 and fragment in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert Registry().find(Adapter, name="bad") == [] and tree(home / "blobs") == blobs


def test_bad_lycoris_files_are_refused_in_one_line(files, tmp_path):
    from styler.adapters.formats import read_adapter
    from styler.errors import InputError

    s = _stem("unet", Q)
    w = {f"{s}.hada_w1_a": torch.ones(32, 2), f"{s}.hada_w1_b": torch.ones(2, 32), f"{s}.hada_w2_a": torch.ones(32, 2),
         f"{s}.hada_w2_b": torch.ones(2, 32), f"{s}.alpha": torch.tensor(1.0)}
    lokr = {f"{s}.lokr_w1_a": torch.ones(4, 2), f"{s}.lokr_w1_b": torch.ones(2, 4), f"{s}.lokr_w2_a": torch.ones(8, 3),
            f"{s}.lokr_w2_b": torch.ones(3, 8)}
    through_cli = [  # each through the real entry point: one line, exit 2, nothing stored
        ({**w, f"{s}.dora_scale": torch.ones(32, 1)}, "DoRA LoHa layer"),
        ({f"{s}.diff": torch.ones(32, 32)}, "LyCORIS full (whole ΔW) layer"),
        (lokr, "ranks 2 and 3"),
        ({f"{s}.lokr_w1": torch.ones(4, 4), f"{s}.lokr_w2": torch.ones(8, 16)}, "does not fit this base"),
    ]
    for i, (tensors, fragment) in enumerate(through_cli):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(tensors, str(path))
        _refused(path, fragment)
    read_only = [  # the same reader, without loading a pipeline per case
        ({k: v for k, v in w.items() if "w2_b" not in k}, "has no hada_w2_b; the LoHa layer is incomplete"),
        ({**w, f"{s}.hada_w2_b": torch.ones(2, 64)}, "which do not make a LoHa layer"),
        ({f"{s}.oft_blocks": torch.ones(4, 8, 8)}, "LyCORIS OFT/BOFT layer"),
        ({**w, f"{s}.lora_down.weight": torch.ones(2, 32)}, "mixes LoHa and LoRA keys"),
        ({**lokr, f"{s}.lokr_w1": torch.ones(4, 4)}, "has both lokr_w1 and lokr_w1_a/lokr_w1_b"),
    ]
    for i, (tensors, fragment) in enumerate(read_only):
        path = tmp_path / f"bad-read{i}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(InputError, match=fragment):
            read_adapter(path)


def test_registry_rebuild_restores_loha_and_lokr_records(files):
    from tests.helpers import rebuild_adapters

    # (an imported record's id is not in its file)
    before, after = rebuild_adapters(("name", "method", "blob", "rank", "alpha", "targets"))
    assert [a[:-1] + [sorted(a[-1])] for a in after] == [b[:-1] + [sorted(b[-1])] for b in before] and len(after) >= 2
