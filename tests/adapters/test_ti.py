"""Multi-vector textual inversion: every one of the N vectors is trained and used in renders."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from styler.adapters import ti
from styler.adapters.lora import AdapterData

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


def test_expand_writes_each_token_as_all_its_words_once():
    v = {"<t>": 3, "sks": 1}
    assert ti.expand("a <t> cat, <t>", v) == "a <t> <t>_1 <t>_2 cat, <t> <t>_1 <t>_2"
    assert ti.expand("a <t> <t>_1 <t>_2 cat", v) == "a <t> <t>_1 <t>_2 cat"  # diffusers would add <t>_1_1 …
    assert ti.expand("a <t> <t>_1 cat", v) == "a <t> <t>_1 <t>_2 cat"
    assert ti.expand("a <T> cat", v) == "a <T> cat" and ti.expand("a <T> cat", v, ignore_case=True) == "a <t> <t>_1 <t>_2 cat"
    assert ti.expand("sks dog", v) == "sks dog"
    assert ti.caption("<t>, a cat", "<t>", 2) == "<t> <t>_1, a cat"  # the importer puts the trigger first
    assert ti.caption("a cat by <t>", "<t>", 2) == "a cat by <t> <t>_1"
    assert ti.caption("a cat", "<t>", 2) == "<t> <t>_1, a cat" and ti.caption("", "<t>", 1) == "<t>"


def test_training_captions_name_every_vector_when_the_trigger_comes_first(tiny_base_dir):
    from styler.models.load import load_pipeline
    from styler.models.resolve import BaseModel
    from styler.train.config import build_config
    from styler.train.methods import make_method

    method = make_method(build_config(dataset="x", method="textual-inversion", token="<Ink>", vectors=3))
    method.prepare(load_pipeline(BaseModel("tiny", "tiny", tiny_base_dir)))
    # before, a caption that started with the trigger (every imported one) trained vector 0 only
    assert method.caption("<Ink>, 永, ink") == "<Ink> <Ink>_1 <Ink>_2, 永, ink"
    assert method.caption("<ink>, 永") == "<Ink> <Ink>_1 <Ink>_2, 永"  # the CLIP tokenizer ignores case
    assert method.caption("永") == "<Ink> <Ink>_1 <Ink>_2, 永"


@pytest.fixture(scope="module")
def session(tiny_base_dir):
    from styler.adapters.mixing import WeightMixer
    from styler.generate.engine import Session
    from styler.models.load import load_pipeline
    from styler.models.resolve import BaseModel

    pipe = load_pipeline(BaseModel("tiny", "tiny", tiny_base_dir))
    pipe.set_progress_bar_config(disable=True)
    return Session(base=None, pipe=pipe, mixer=WeightMixer(pipe))


def _encoded_ids(session, prompt, monkeypatch, **kw):
    seen = []
    forward = session.pipe.text_encoder.forward

    def spy(input_ids, *a, **k):
        seen.append(input_ids.tolist())
        return forward(input_ids, *a, **k)

    monkeypatch.setattr(session.pipe.text_encoder, "forward", spy)
    image = session.render(prompt=prompt, negative="", seed=1, steps=1, guidance=1.0, width=32, height=32, **kw)
    monkeypatch.undo()
    return seen[0][0], np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("token", ["<ink>", "<Mifu>"])
def test_a_render_uses_all_n_vectors_as_diffusers_load_textual_inversion_does(session, monkeypatch, token):
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(3, 64, generator=g)
    session._load_tokens(SimpleNamespace(id=f"ti-{token}", label="ti@1"),
                         AdapterData("textual-inversion", embeddings={token: vectors}))
    tok = session.pipe.tokenizer
    words = ti.tokens_for(token, 3)
    ids = tok.convert_tokens_to_ids(words)
    assert len(set(ids)) == 3 and tok.unk_token_id not in ids
    got, image = _encoded_ids(session, f"a {token} cat", monkeypatch)
    # diffusers' own expansion misses a token with capitals under CLIP's lowercasing: vector 0 alone
    assert [i for i in got if i in ids] == ids, (token, got[:8])
    emb = session.pipe.text_encoder.get_input_embeddings().weight
    assert all(torch.equal(emb[i].detach(), v) for i, v in zip(ids, vectors))
    # the last vector matters: another adapter with the same token and a different third vector
    other = vectors.clone()
    other[2] = torch.randn(64, generator=g)  # (a constant shift would vanish in the layer norms)
    session._load_tokens(SimpleNamespace(id=f"ti2-{token}", label="ti2@1"),
                         AdapterData("textual-inversion", embeddings={token: other}))
    _, changed = _encoded_ids(session, f"a {token} cat", monkeypatch)
    assert np.abs(changed - image).max() > 0
    img2img = session._variant("StableDiffusionImg2ImgPipeline")  # made after the load: expands too
    assert img2img.maybe_convert_prompt(f"a {token}", tok) == f"a {' '.join(words)}"


def test_textual_inversion_training_trains_every_vector(styler_home, tiny_home):
    from safetensors.torch import load_file

    from registry import Adapter, BlobStore, Registry
    from styler.data.library import synth_dataset
    from tests.helpers import run_cli

    synth_dataset("ink", kind="calligraphy", n=4, size=32, seed=0, trigger="<ink>")  # trigger first in captions
    r = run_cli("train", "ink", "--base", "tiny", "--resolution", "32", "--steps", "3", "--lr", "5e-2",
                "--method", "textual-inversion", "--token", "<ink>", "--init-token", "ink", "--vectors", "3")
    assert r.exit_code == 0, r.stderr
    a = Registry().resolve(Adapter, "ink")
    vec = load_file(str(BlobStore(styler_home).path(a.blob)))["<ink>"]
    assert vec.shape == (3, 64)
    # all three start as the init word's embedding; each one must have moved
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    pipe = load_pipeline(resolve_base("tiny"))
    (init,) = pipe.tokenizer.encode("ink", add_special_tokens=False)
    start = pipe.text_encoder.get_input_embeddings().weight[init].detach()
    assert all(not torch.allclose(vec[i], start) for i in range(3)), [float((vec[i] - start).abs().max()) for i in range(3)]
