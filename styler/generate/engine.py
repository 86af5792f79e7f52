"""Rendering images: one loaded pipeline per base on the chosen device and dtype, schedulers by
name, adapters applied as an exact folded mix (folded once per mix, not once per image), and every
image drawn from its own seeded generator, so a batch of B images gives the images B single
renders give and any single image can be made again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from registry import Adapter, BlobStore, Registry

from ..adapters.mixing import MixEntry, WeightMixer
from ..device import Placement, resolve_placement
from ..errors import InputError, UsageError

# styler name -> (diffusers scheduler class, extra config)
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}


def check_scheduler(name: str) -> None:
    """A sampler name of `--scheduler` (a key of SCHEDULERS), or one UsageError listing them; callers
    that render later (an eval, a sweep) check it before anything renders."""
    if name not in SCHEDULERS:
        raise UsageError(f"unknown --scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
MAX_SEED = 2**32 - 1
MIN_STEPS = {"pndm": 4}  # PNDM's Runge-Kutta warm-up needs 4 steps (diffusers fails below)


@dataclass
class AdapterChoice:
    record: Adapter
    weight: float = 1.0
    te_weight: float | None = None
    step: int | None = None  # its weights at this training step (a checkpoint of its run), not its own file's


def check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed} is out of range; use 0 … {MAX_SEED}")
    return seed


@dataclass
class Session:
    """A base pipeline kept loaded across many images and mixes."""

    base: object
    pipe: object = None
    mixer: WeightMixer = None
    identity: dict = field(default_factory=dict)
    loaded_tokens: dict = field(default_factory=dict)  # textual-inversion token -> (vectors, adapter id)
    placement: Placement = field(default_factory=Placement)
    _data_cache: dict = field(default_factory=dict)
    _variants: dict = field(default_factory=dict)

    @classmethod
    def open(cls, base_spec: str | None = None, placement: Placement | None = None) -> "Session":
        """Load the base on `placement` (default: what --device/--dtype, the environment or config say)."""
        from ..models.load import load_pipeline
        from ..models.resolve import base_identity, resolve_base

        placement = placement or resolve_placement()
        base = resolve_base(base_spec or None)
        pipe = load_pipeline(base, device=placement.device, dtype=placement.torch_dtype)
        pipe.set_progress_bar_config(disable=True)
        return cls(base=base, pipe=pipe, mixer=WeightMixer(pipe), identity=base_identity(base), placement=placement)

    def adapter_data(self, record: Adapter, registry: Registry, step: int | None = None):
        """The adapter's tensors, read once per session; with `step`, its weights at that training step."""
        from ..adapters.formats import check_compatible, read_adapter

        if step is not None:
            from ..adapters.steps import checkpoint_for, read_at_step

            folder = checkpoint_for(registry, record, step)
            if folder is None:  # the final step: the adapter's own file
                return self.adapter_data(record, registry)
            key = (record.id, step)
            if key not in self._data_cache:
                data = read_at_step(folder, self.adapter_data(record, registry))
                if data.kind == "lora":
                    check_compatible(data, self.pipe)
                self._data_cache[key] = data
            return self._data_cache[key]
        if record.id not in self._data_cache:
            self._check_base(record)
            blobs = BlobStore(registry.home)
            if not blobs.verify(record.blob):  # a flipped bit would change every image silently
                raise InputError(f"the file of adapter {record.label} is missing or damaged (its sha256 no longer "
                                 f"matches {record.blob[:12]}…); run `styler registry verify`, then re-import or "
                                 f"retrain it")
            data = read_adapter(blobs.path(record.blob), module_names=self.module_names())
            if data.kind == "lora":
                check_compatible(data, self.pipe)
            self._data_cache[record.id] = data
        return self._data_cache[record.id]

    def _check_base(self, record: Adapter) -> None:
        """An adapter of an earlier built-in tiny base (other weights, other layer sizes) cannot
        apply to today's: say so with the fix, instead of a shape error."""
        made_on = record.base or {}
        if (made_on.get("name") == "tiny" and self.identity.get("name") == "tiny"
                and made_on.get("hash") and made_on.get("hash") != self.identity.get("hash")):
            from ..models.tiny import TINY_VERSION

            fix = ("styler demo --fresh" if record.name.startswith("demo/")
                   else f"styler train --dataset DATASET --name {record.name} --base tiny")
            raise InputError(f"adapter {record.label} was trained on an earlier built-in tiny base, which styler "
                             f"replaced (now tiny v{TINY_VERSION}, pretrained); retrain it: {fix}")

    def module_names(self) -> dict[str, set[str]]:
        from ..adapters.formats import model_module_names

        return model_module_names(self.pipe)

    def set_scheduler(self, name: str) -> None:
        import diffusers

        check_scheduler(name)
        cls_name, extra = SCHEDULERS[name]
        self.scheduler_name = name
        cls = getattr(diffusers, cls_name)
        self.pipe.scheduler = cls.from_config(self.pipe.scheduler.config, **extra)

    def apply(self, choices: list[AdapterChoice], registry: Registry, warn=None) -> list[dict]:
        """Fold the LoRAs into the weights; load textual-inversion tokens. Returns the adapter list
        recorded with each image."""
        from ..adapters.mixing import check_weights

        entries, recorded = [], []
        for c in choices:
            data = self.adapter_data(c.record, registry, c.step)
            if data.kind == "textual-inversion":
                self._load_tokens(c.record, data, c.step)
            else:
                entries.append(MixEntry(c.record.label, data, c.weight, c.te_weight))
            entry = {"id": c.record.id, "name": c.record.name, "version": c.record.version,
                     "method": c.record.method, "weight": c.weight,
                     "te_weight": c.weight if c.te_weight is None else c.te_weight, "hash": c.record.blob}
            if c.step is not None:
                entry["train_step"] = c.step
                if "checkpoint" in data.metadata:  # an earlier step: the weights came from this checkpoint
                    entry["checkpoint"] = f"runs/{c.record.run_id}/checkpoints/{Path(data.metadata['checkpoint']).name}"
            recorded.append(entry)
        check_weights(entries, warn or (lambda m: None))
        self.mixer.apply(entries)
        return recorded

    def _load_tokens(self, record: Adapter, data, step: int | None = None) -> None:
        """Add a textual inversion's words and vectors as diffusers' `load_textual_inversion` does
        (an n-vector token is the words token, token_1, …, token_{n-1}), and have the pipeline expand
        the token in prompts into all n words (styler.adapters.ti), so all n vectors are used. A token
        loaded earlier in this session by another adapter (or another step of it) gets these vectors."""
        import torch

        from ..adapters import ti

        tok, te = self.pipe.tokenizer, self.pipe.text_encoder
        source = record.id if step is None else f"{record.id}@{step}"
        for token, vectors in data.embeddings.items():
            n = int(vectors.shape[0])
            had, owner = self.loaded_tokens.get(token, (0, None))
            if owner == source:
                continue
            tokens = ti.tokens_for(token, n)
            if had and had != n:
                raise UsageError(f"{record.label}: token {token!r} was loaded in this session with {had} "
                                 f"vectors, this adapter has {n}; use it in a new command")
            if not had:
                fold = str.lower if ti.lowercases(tok) else str  # "<Ink>_1" is "<ink>_1" to CLIP's tokenizer
                vocab = {fold(w) for w in tok.get_vocab()}
                clash = [t for t in tokens if fold(t) in vocab]
                if clash:
                    raise UsageError(f"{record.label}: token {clash[0]!r} is already a word of this base's tokenizer")
                tok.add_tokens(tokens)
                te.resize_token_embeddings(len(tok), mean_resizing=False)
            emb = te.get_input_embeddings().weight
            with torch.no_grad():
                for t, v in zip(tokens, vectors):
                    emb[tok.convert_tokens_to_ids(t)] = v.to(emb.dtype)
            self.loaded_tokens[token] = (n, source)
        vectors = {token: n for token, (n, _) in self.loaded_tokens.items()}
        for pipe in [self.pipe, *self._variants.values()]:
            ti.install(pipe, vectors)

    def render(self, *, prompt: str, negative: str, seed: int, steps: int, guidance: float, width: int,
               height: int, image=None, strength: float | None = None, mask=None):
        """One image with the current weights."""
        return self.render_batch(prompts=[prompt], negative=negative, seeds=[seed], steps=steps, guidance=guidance,
                                 width=width, height=height, image=image, strength=strength, mask=mask)[0]

    def render_batch(self, *, prompts: list[str], negative: str, seeds: list[int], steps: int, guidance: float,
                     width: int, height: int, image=None, strength: float | None = None, mask=None) -> list:
        """len(seeds) images in one forward pass per step, image i from prompts[i] and its own CPU
        generator seeded with seeds[i] (so the same seed gives the same start on every device)."""
        import torch

        need = MIN_STEPS.get(getattr(self, "scheduler_name", ""), 1)
        if steps < need:
            raise UsageError(f"--scheduler {self.scheduler_name} needs --steps {need} or more")
        if len(prompts) != len(seeds):
            raise ValueError("one prompt per seed")
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        common = dict(prompt=list(prompts), negative_prompt=[negative] * len(prompts) if negative else None,
                      num_inference_steps=steps, guidance_scale=guidance, generator=gens)
        with torch.no_grad():
            if image is None:
                return self.pipe(height=height, width=width, **common).images
            images = [image] * len(prompts)
            if mask is None:
                return self._variant("StableDiffusionImg2ImgPipeline")(image=images, strength=strength, **common).images
            return self._variant("StableDiffusionInpaintPipeline")(
                image=images, mask_image=[mask] * len(prompts), strength=strength, height=image.height,
                width=image.width, **common
            ).images

    def _variant(self, cls_name: str):
        """img2img/inpaint pipelines sharing the loaded components (and so the mixed weights)."""
        if cls_name not in self._variants:
            import diffusers

            p = getattr(diffusers, cls_name)(**self.pipe.components, requires_safety_checker=False)
            p.set_progress_bar_config(disable=True)
            if "maybe_convert_prompt" in vars(self.pipe):  # textual-inversion expansion (see _load_tokens)
                p.maybe_convert_prompt = self.pipe.maybe_convert_prompt
            self._variants[cls_name] = p
        return self._variants[cls_name]
