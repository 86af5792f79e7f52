"""One list of refused weight files (models.resolve.PICKLE_SUFFIXES, NON_SAFETENSORS_WEIGHTS): base
models, CLIP models and adapters refuse the same suffixes, pickles as pickles and Flax/TensorFlow
files as what they are, and nothing is opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from styler.errors import InputError, UsageError
from styler.models.resolve import NON_SAFETENSORS_WEIGHTS, PICKLE_SUFFIXES, resolve_base

PICKLE = b"\x80\x04garbage that would be a pickle"


def test_the_lists():
    assert PICKLE_SUFFIXES == {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
    assert set(NON_SAFETENSORS_WEIGHTS) == {".msgpack", ".h5"} and not PICKLE_SUFFIXES & set(NON_SAFETENSORS_WEIGHTS)


def _clip_folder(tmp_path: Path, weights: str) -> Path:
    folder = tmp_path / f"clip{Path(weights).suffix}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / weights).write_bytes(PICKLE)
    return folder


@pytest.mark.parametrize("suffix", sorted(PICKLE_SUFFIXES))
def test_every_pickle_suffix_is_refused_everywhere(styler_home, tmp_path, suffix):
    from styler.adapters.formats import read_adapter
    from styler.eval.features import resolve_clip

    f = tmp_path / f"model{suffix.upper() if suffix == '.ckpt' else suffix}"  # the case does not matter
    f.write_bytes(PICKLE)
    with pytest.raises(UsageError, match="pickled checkpoint"):
        resolve_base(str(f))
    with pytest.raises(InputError, match="are pickles and styler never unpickles"):
        read_adapter(f)
    with pytest.raises(UsageError, match="only pickled weights") as exc:
        resolve_clip(str(_clip_folder(tmp_path, f"pytorch_model{suffix}")))
    assert "unpickle" in exc.value.message and "\n" not in exc.value.message


@pytest.mark.parametrize("suffix", sorted(NON_SAFETENSORS_WEIGHTS))
def test_flax_and_tensorflow_weights_are_refused_but_not_called_pickles(styler_home, tmp_path, suffix):
    from styler.adapters.formats import read_adapter
    from styler.eval.features import resolve_clip

    f = tmp_path / f"model{suffix}"
    f.write_bytes(b"\x00not read")
    for call, error in ((lambda: resolve_base(str(f)), UsageError), (lambda: read_adapter(f), InputError),
                        (lambda: resolve_clip(str(_clip_folder(tmp_path, f"flax_model{suffix}"))), UsageError)):
        with pytest.raises(error) as exc:
            call()
        assert "pickle" not in exc.value.message and ".safetensors" in exc.value.message


def test_no_other_module_keeps_a_list():
    root = Path(__file__).resolve().parents[2]
    owners = [p.relative_to(root).as_posix() for p in [*root.glob("styler/**/*.py"), *root.glob("registry/*.py")]
              if '".ckpt"' in p.read_text("utf-8") or "PICKLE_SUFFIXES =" in p.read_text("utf-8")]
    assert owners == ["styler/models/resolve.py"]
