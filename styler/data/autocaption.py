"""`styler data caption`: caption a dataset version's images with an image-to-text model (BLIP, GIT
or Florence-2 through transformers) and save the result as the next version.

The model is a local folder or a Hugging Face repo id found in the local cache (never downloaded
here), with .safetensors weights only. Generated captions get the trigger word and prefix by the
same rule as `data add` (`captions.compose`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from registry import Registry

from ..errors import ModelNotFound, StylerError, UsageError
from . import captions as cap
from .caption_edits import CaptionDraft, SavedVersion, open_draft, save_draft

# config.json model_type -> (transformers class, the task prompt it is given)
MODEL_CLASSES = {
    "blip": ("BlipForConditionalGeneration", None),
    "git": ("GitForCausalLM", None),
    "florence2": ("Florence2ForConditionalGeneration", "<CAPTION>"),
}
MODES = ("auto", "overwrite", "only-missing")


@dataclass(frozen=True)
class CaptionModelRef:
    name: str  # the repo id or the folder's name
    kind: str  # "hf" | "folder"
    path: Path
    model_type: str

    @property
    def label(self) -> str:
        return f"{self.model_type}:{self.name}"


def _read_config(folder: Path, label: str) -> dict:
    from ..models.resolve import NON_SAFETENSORS_WEIGHTS, PICKLE_SUFFIXES, _read_json

    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{label} has no config.json; a captioning model folder holds config.json, .safetensors "
                            "weights and its processor files (as save_pretrained writes them)")
    config = _read_json(folder / "config.json")
    model_type = config.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise UsageError(f"{label} is a {model_type!r} model; styler captions with BLIP, GIT or Florence-2 "
                         "(config.json model_type blip, git or florence2)")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        other = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in NON_SAFETENSORS_WEIGHTS)
        if pickles:
            raise UsageError(f"{label} has only pickled weights ({', '.join(pickles)}); styler does not unpickle "
                             "files, which can run arbitrary code: use a copy with .safetensors weights")
        if other:
            raise UsageError(f"{label} has only Flax or TensorFlow weights ({', '.join(other)}); styler reads only "
                             ".safetensors: convert them or use a copy that has them")
        raise ModelNotFound(f"{label} has no .safetensors weights")
    return config


def resolve_caption_model(spec: str) -> CaptionModelRef:
    """A captioning model from a local folder or a repo id in the local Hugging Face cache."""
    from ..models.resolve import hf_cache_dir, hf_snapshot, is_repo_id

    spec = (spec or "").strip()
    if not spec:
        raise UsageError("--with needs a captioning model: a Hugging Face repo id such as "
                         "Salesforce/blip-image-captioning-base, or a local folder")
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        config = _read_config(path, str(path))
        return CaptionModelRef(path.name, "folder", path, config["model_type"])
    if path.is_file():
        raise UsageError(f"{path} is a file; --with takes a model folder (config.json + .safetensors + processor "
                         "files) or a Hugging Face repo id")
    if is_repo_id(spec):
        cache = hf_cache_dir()
        snap = hf_snapshot(spec, cache)
        if snap is None:
            raise ModelNotFound(f"captioning model {spec!r} is not in the local Hugging Face cache ({cache}) and styler "
                                f"does not download it: fetch it with `hf download {spec}`, or give a local folder")
        config = _read_config(snap, f"captioning model {spec!r} ({snap})")
        return CaptionModelRef(spec, "hf", snap, config["model_type"])
    raise ModelNotFound(f"captioning model {spec!r} not found: no such folder, and not a Hugging Face repo id "
                        "(expected org/name, e.g. Salesforce/blip-image-captioning-base)")


class Captioner:
    """A loaded captioning model and its processor, on one device."""

    def __init__(self, ref: CaptionModelRef, placement, *, max_tokens: int = 40, beams: int = 1):
        import torch
        import transformers
        from transformers import AutoProcessor

        from ..models.load import quiet

        self.ref, self.placement, self.max_tokens, self.beams = ref, placement, max_tokens, beams
        class_name, self.task = MODEL_CLASSES[ref.model_type]
        try:
            with quiet():
                self.processor = AutoProcessor.from_pretrained(str(ref.path))
                model = getattr(transformers, class_name).from_pretrained(
                    str(ref.path), use_safetensors=True, dtype=placement.torch_dtype)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFound(f"could not load {ref.label} from {ref.path} ({line}); it needs config.json, "
                                ".safetensors weights and its processor's files (as save_pretrained writes them)") from None
        self.model = model.to(placement.device).eval()
        self._torch = torch
        # no longer than the decoder's positions allow (a real BLIP has 512; past them generate fails)
        text_config = getattr(model.config, "text_config", None) or model.config
        limit = getattr(text_config, "max_position_embeddings", None)
        if limit:
            self.max_tokens = max(1, min(max_tokens, int(limit) - 4))

    def caption(self, images: list) -> list[str]:
        """One caption per PIL image, single-spaced."""
        torch = self._torch
        kwargs = {"images": images, "return_tensors": "pt"}
        if self.task:
            kwargs["text"] = [self.task] * len(images)
        inputs = self.processor(**kwargs)
        pixels = inputs["pixel_values"].to(self.placement.device, self.placement.torch_dtype)
        extra = {k: inputs[k].to(self.placement.device) for k in ("input_ids", "attention_mask") if k in inputs}
        from ..models.load import quiet

        with torch.inference_mode(), quiet():
            ids = self.model.generate(pixel_values=pixels, **extra, max_new_tokens=self.max_tokens,
                                      num_beams=self.beams, do_sample=False)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [cap._clean(t) for t in texts]


@dataclass
class CaptionReport:
    saved: SavedVersion
    model: CaptionModelRef
    captioned: list[str] = field(default_factory=list)  # the images given new captions
    empty: list[str] = field(default_factory=list)  # the model said nothing for these


def has_caption(draft: CaptionDraft, i: int) -> bool:
    """Whether image i has a caption of its own (more than the trigger word and prefix)."""
    d = draft.dataset
    text = draft.texts[i].strip()
    if draft.label(i) in set(draft.manifest.get("missing_captions", [])) and text == draft.original[i]:
        return False
    return bool(text) and text != cap.compose("", prefix=d.prefix, trigger=d.trigger)


def pick_images(draft: CaptionDraft, mode: str) -> list[int]:
    """The images to caption: all of them when none has a caption; otherwise the mode must say."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; use {', '.join(MODES)}")
    have = [i for i in range(len(draft)) if has_caption(draft, i)]
    missing = [i for i in range(len(draft)) if i not in set(have)]
    label = draft.dataset.label
    if mode == "overwrite":
        return list(range(len(draft)))
    if mode == "only-missing":
        if not missing:
            raise UsageError(f"every image of {label} has a caption; nothing to do (--overwrite replaces them)")
        return missing
    if have:
        rest = f" or --only-missing to caption the other {len(missing)}" if missing else ""
        raise UsageError(f"{label} already has captions for {len(have)} of {len(draft)} images (from "
                         f"{draft.dataset.caption_from}); pass --overwrite to replace them{rest}")
    return missing


def caption_dataset(name: str, model: str, *, placement=None, mode: str = "auto", prefix: str | None = None,
                    trigger: str | None = None, batch: int = 8, max_tokens: int = 40, beams: int = 1,
                    registry: Registry | None = None,
                    progress: Callable[[int, int], None] | None = None) -> CaptionReport:
    """Caption NAME[@V]'s images with MODEL and save them as the next version of NAME.

    `prefix`/`trigger` default to the source version's own; None keeps them, "" drops them."""
    from PIL import Image

    if batch < 1:
        raise UsageError(f"--batch {batch} must be at least 1")
    if max_tokens < 1:
        raise UsageError(f"--max-tokens {max_tokens} must be at least 1 (e.g. 40)")
    reg = registry or Registry()
    draft = open_draft(name, registry=reg)
    ref = resolve_caption_model(model)
    todo = pick_images(draft, mode)
    if placement is None:
        from ..device import resolve_placement

        placement = resolve_placement()
    captioner = Captioner(ref, placement, max_tokens=max_tokens, beams=beams)
    d = draft.dataset
    prefix = d.prefix if prefix is None else prefix
    trigger = d.trigger if trigger is None else trigger
    folder = reg.home / d.path / "images"
    empty: list[str] = []
    for start in range(0, len(todo), batch):
        if progress:
            progress(start, len(todo))
        chunk = todo[start:start + batch]
        images = []
        for i in chunk:
            try:
                with Image.open(folder / draft.entries[i]["file"]) as im:
                    images.append(im.convert("RGB"))
            except OSError as exc:
                raise StylerError(f"cannot read {folder / draft.entries[i]['file']} of {d.label} ({exc}); "
                                  f"run `styler data verify {d.label}`; nothing was written") from None
        for i, text in zip(chunk, captioner.caption(images)):
            if not text:
                empty.append(draft.label(i))
            stem = draft.label(i).rsplit("/", 1)[-1].rsplit(".", 1)[0]
            draft.texts[i] = cap.compose(text, prefix=prefix, trigger=trigger, stem=stem)
    if progress:
        progress(len(todo), len(todo))
    how = f"captioned {len(todo)} of {len(draft)} images with {ref.label}"
    saved = save_draft(draft, caption_from=ref.label, prefix=prefix, trigger=trigger, note=how,
                       allow_unchanged=True, registry=reg)
    return CaptionReport(saved, ref, [draft.label(i) for i in todo], empty)
