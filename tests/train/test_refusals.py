"""`styler train` refuses what cannot work before it writes anything: one line naming the problem
and the fix, exit 2, no run record and nothing under runs/ (bad base, too small a resolution,
targets that match no layer, out-of-range numbers, a rank beyond the layers it adapts)."""

import shutil

import pytest

from registry import Adapter, Registry, Run
from tests.helpers import run_cli, tree

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


def _refused(r, fragment, home):
    assert r.exit_code == 2, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line, r.stderr
    assert fragment in line, line
    assert "unexpected" not in line
    assert Registry().all(Run) == [] and Registry().all(Adapter) == []
    assert tree(home / "runs") == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "inf"], "--lr must be > 0 and finite"),
        (["--lr", "nan"], "--lr must be > 0 and finite"),
        (["--lr-text", "inf", "--text-encoder"], "--lr-text must be > 0 and finite"),
        (["--lr-text", "nan"], "--lr-text must be > 0 and finite"),
        (["--lr-text", "0"], "--lr-text must be > 0 and finite"),
        (["--lr-text", "-1"], "--lr-text must be > 0 and finite"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--accum", "0"], "--accum must be >= 1"),
        (["--snr-gamma", "-1"], "--snr-gamma must be > 0 and finite"),
        (["--snr-gamma", "nan"], "--snr-gamma must be > 0 and finite"),
        (["--noise-offset", "nan"], "--noise-offset must be >= 0 and finite"),
        (["--noise-offset", "inf"], "--noise-offset must be >= 0 and finite"),
        (["--alpha", "inf"], "--alpha must be > 0 and finite"),
        (["--prior-weight", "nan", "--method", "dreambooth", "--class-prompt", "x"], "--prior-weight"),
        (["--method", "textual-inversion", "--token", "a"], "--token 'a' is already a word of the tokenizer"),
        (["--method", "textual-inversion", "--init-token", "two words"], "--init-token 'two words' is 6 tokens"),
        (["--rank", "100000"], "--rank 100000 is larger than the smallest layer it adapts"),
        (["--rank", "65", "--targets", "attn+conv"], "--rank 65 is larger than the smallest layer it adapts"),
    ],
)
def test_refused_before_anything_is_written(calli, styler_home, args, fragment):
    steps = [] if "--steps" in args else ["--steps", "1"]
    resolution = [] if "--resolution" in args else ["--resolution", "32"]
    r = run_cli("train", calli, "--base", "tiny", *resolution, *steps, *args)
    _refused(r, fragment, styler_home)


@pytest.fixture
def narrow_base(tmp_path, monkeypatch):
    """A real diffusers folder whose UNet cannot run latents under 3×3: the tiny layout at tiny v3's
    width (32 channels at the top, random weights). Tiny v4 (64 channels) runs at any multiple of 8."""
    from styler.models import tiny

    monkeypatch.setitem(tiny.UNET_CONFIG, "block_out_channels", (32, 64, 128))
    return tiny.build_tiny(tmp_path / "narrow", seed=0)


@pytest.mark.parametrize("resolution, fragment", [("8", "--resolution 8 is too small for base"),
                                                  ("16", "use --resolution 24 or more")])
def test_too_small_a_resolution_is_refused(calli, styler_home, narrow_base, resolution, fragment):
    r = run_cli("train", calli, "--base", narrow_base, "--resolution", resolution, "--steps", "1")
    _refused(r, fragment, styler_home)


def test_the_smallest_resolution_and_the_largest_rank_train(calli, styler_home, narrow_base):
    # the bounds are the true ones: 24 px (3×3 latents) on the narrow base, and rank 64 (tiny's
    # narrowest layer) on tiny
    r = run_cli("train", calli, "--base", narrow_base, "--resolution", "24", "--steps", "1")
    assert r.exit_code == 0, r.stderr
    r = run_cli("train", calli, "--base", "tiny", "--resolution", "32", "--steps", "1", "--rank", "64")
    assert r.exit_code == 0, r.stderr


def test_a_base_folder_without_unet_weights(calli, styler_home, tiny_base_dir, tmp_path):
    base = tmp_path / "no-unet"
    shutil.copytree(tiny_base_dir, base)
    for f in (base / "unet").glob("*.safetensors"):
        f.unlink()
    r = run_cli("train", calli, "--base", base, "--resolution", "32", "--steps", "1")
    _refused(r, "has no .safetensors weights", styler_home)


def test_a_pickle_renamed_safetensors(calli, styler_home, tmp_path):
    import pickle

    fake = tmp_path / "model.safetensors"
    fake.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}))
    r = run_cli("train", calli, "--base", fake, "--resolution", "32", "--steps", "1")
    _refused(r, "not a valid safetensors file", styler_home)


def test_a_base_with_a_broken_unet_config(calli, styler_home, tiny_base_dir, tmp_path):
    base = tmp_path / "bad-config"
    shutil.copytree(tiny_base_dir, base)
    (base / "unet" / "config.json").write_text("{not json", encoding="utf-8")
    r = run_cli("train", calli, "--base", base, "--resolution", "32", "--steps", "1")
    _refused(r, "unet/config.json", styler_home)


def test_dry_run_refuses_the_same(calli, styler_home, narrow_base):
    r = run_cli("train", calli, "--base", narrow_base, "--resolution", "16", "--steps", "1", "--dry-run")
    _refused(r, "--resolution 16 is too small", styler_home)


@pytest.mark.parametrize("token, entry", [("cat", "cat</w>"), ("Ink", "ink</w>"), ("<mifu>", None)])
def test_a_textual_inversion_token_that_is_a_whole_word_is_refused(calli, styler_home, capsys, token, entry):
    # CLIP's vocabulary keeps whole words as `word</w>` (and lowercases): `cat` is not an entry,
    # but the tokenizer reads it as one, so a new `cat` token would shadow that word
    from styler.cli.main import main

    capsys.readouterr()
    args = ["train", calli, "--base", "tiny", "--resolution", "32", "--steps", "1", "--method", "textual-inversion",
            "--token", token]
    rc = main(args + (["--dry-run"] if entry is None else []))
    cap = capsys.readouterr()
    if entry is None:  # a token the tokenizer reads as several is new (its plan is enough to show it)
        assert rc == 0, cap.err
        return
    assert rc == 2 and cap.out == "", cap.err
    assert cap.err.strip() == (f"error: --token {token!r} is already a word of the tokenizer ({entry!r} in its "
                               f"vocabulary); choose a new one, e.g. <{token}>")
    assert Registry().all(Run) == [] and tree(styler_home / "runs") == []


@pytest.mark.parametrize("name", ["a/b/c", "Bad Name"])
def test_a_bad_adapter_name_is_refused_before_training(calli, styler_home, name):
    """The name is checked with the other options, so a queued job (the worker calls `train`
    directly, not the CLI) fails at once instead of after a whole run, when the adapter is registered."""
    from styler.errors import UsageError
    from styler.train.config import build_config

    with pytest.raises(UsageError, match=r"^--name: invalid name"):
        build_config(dataset=calli, base="tiny", steps=1, name=name)
    r = run_cli("train", calli, "--base", "tiny", "--resolution", "32", "--steps", "1", "--name", name)
    _refused(r, "invalid name", styler_home)
