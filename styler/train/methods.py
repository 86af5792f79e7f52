"""Training methods plugged into the one loop: what is trainable, and how the result is saved.

- lora: peft LoRA on the UNet (attention by default; conv/ff on request) and optionally the text
  encoder, saved in diffusers/peft format with adapter metadata so `load_lora_weights` rebuilds the
  exact config (alpha != rank included).
- dreambooth: lora plus prior preservation (the loop adds the class-image loss).
- adalora: AdaLoRA through peft (adalora.py): a rank budget pruned by importance during training,
  saved as a plain LoRA with per-layer ranks.
- textual-inversion: one new token (or N vectors) whose embedding rows are the only thing trained;
  saved as `{token: tensor[N, dim]}`, which diffusers' `load_textual_inversion` reads.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import UsageError
from .config import TEXT_TARGETS, TrainConfig

ADAPTER_FILE = "adapter.safetensors"


class Method:
    """The interface the loop uses."""

    name = ""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def prepare(self, pipe) -> None:
        """Freeze the base and add what is trained."""
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        raise NotImplementedError

    def trainable(self) -> dict:
        """name → tensor of everything trained (what a checkpoint must hold)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared; `step` counts from 0."""

    def regularisation(self):
        """A penalty on the trained weights the loop adds to the loss (None: none)."""
        return None

    def after_restore(self) -> None:
        """Called after a checkpoint was loaded into `trainable()`."""

    def budget(self, step: int):
        """The live panel's RankBudget after `step` steps (None: the method has none)."""
        return None

    def results(self) -> dict:
        """What the run record keeps about the trained result beyond the adapter ({}: nothing)."""
        return {}

    def caption(self, text: str) -> str:
        return text

    def save(self, path: Path, metadata: dict[str, str]) -> Path:
        raise NotImplementedError

    def summary(self) -> dict:
        """Trainable parameter counts for --dry-run and the run record."""
        return {"trainable_params": sum(t.numel() for t in self.trainable().values())}


def _freeze(pipe) -> None:
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)


def _write_with_metadata(src: Path, dest: Path, extra: dict[str, str]) -> Path:
    """Copy a safetensors file, adding metadata keys, atomically (temp file + os.replace)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    metadata.update({k: str(v) for k, v in extra.items()})
    metadata.setdefault("format", "pt")
    from ..files import atomic_write

    return atomic_write(dest, lambda tmp: save_file(tensors, tmp, metadata=metadata),
                        error=f"could not save the adapter to {dest}")


class LoraMethod(Method):
    name = "lora"

    def prepare(self, pipe) -> None:
        from peft import LoraConfig

        self.pipe = pipe
        _freeze(pipe)
        cfg = self.cfg
        self.unet_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.effective_alpha, init_lora_weights="gaussian",
                                      target_modules=cfg.unet_target_modules(), use_dora=cfg.dora)
        try:
            pipe.unet.add_adapter(self.unet_config)
        except ValueError as exc:  # peft: none of the target modules exist in this model
            raise UsageError(f"--targets {cfg.targets}: {exc}") from None
        self.text_config = None
        if cfg.text_encoder:
            self.text_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.effective_alpha, init_lora_weights="gaussian",
                                          target_modules=list(TEXT_TARGETS), use_dora=cfg.dora)
            pipe.text_encoder.add_adapter(self.text_config)
        # trainable weights stay fp32 even under mixed precision (the loop autocasts the forward)
        for p in self._params(pipe.unet) + (self._params(pipe.text_encoder) if cfg.text_encoder else []):
            p.data = p.data.float()

    @staticmethod
    def _params(module) -> list:
        return [p for p in module.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        groups = [{"params": self._params(self.pipe.unet), "lr": self.cfg.lr}]
        if self.cfg.text_encoder:
            groups.append({"params": self._params(self.pipe.text_encoder), "lr": self.cfg.effective_lr_text})
        return groups

    def trainable(self) -> dict:
        out = {f"unet.{n}": p for n, p in self.pipe.unet.named_parameters() if p.requires_grad}
        if self.cfg.text_encoder:
            out.update({f"text_encoder.{n}": p for n, p in self.pipe.text_encoder.named_parameters() if p.requires_grad})
        return out

    def save(self, path: Path, metadata: dict[str, str]) -> Path:
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        unet_layers = get_peft_model_state_dict(self.pipe.unet)
        te_layers = get_peft_model_state_dict(self.pipe.text_encoder) if self.cfg.text_encoder else None
        if te_layers:  # text_encoder.text_model.… keys, what transformers 4, older diffusers and ComfyUI read
            from ..adapters.formats import text_model_keys

            te_layers = text_model_keys(te_layers)
        with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
            # Raw peft keys on purpose: convert_state_dict_to_diffusers drops attention keys once conv
            # layers are targeted (shared/DESIGN.md); load_lora_weights accepts peft keys as they are.
            StableDiffusionPipeline.save_lora_weights(
                tmp, unet_lora_layers=unet_layers, text_encoder_lora_layers=te_layers,
                weight_name=ADAPTER_FILE, unet_lora_adapter_metadata=self.unet_config.to_dict(),
                text_encoder_lora_adapter_metadata=self.text_config.to_dict() if self.text_config else None,
            )
            return _write_with_metadata(Path(tmp) / ADAPTER_FILE, path, metadata)


class DreamBoothMethod(LoraMethod):
    """LoRA with prior preservation; the loop generates/caches class images and adds their loss."""

    name = "dreambooth"

    def caption(self, text: str) -> str:
        return self.cfg.instance_prompt or text


def known_word(tok, text: str) -> str:
    """The tokenizer's vocabulary entry that `text` already is ("" if none): the entry itself, or
    the one token the tokenizer reads `text` as (CLIP's BPE keeps whole words as `word</w>`, and
    lowercases, so `Cat` is `cat</w>`)."""
    if text in tok.get_vocab():
        return text
    ids = tok.encode(text, add_special_tokens=False)
    if len(ids) == 1 and ids[0] != tok.unk_token_id:
        return tok.convert_ids_to_tokens(ids[0])
    return ""


class TextualInversionMethod(Method):
    name = "textual-inversion"

    def __init__(self, cfg: TrainConfig, token: str):
        super().__init__(cfg)
        if not token:
            raise UsageError("--method textual-inversion needs --token (or a dataset with a trigger word)")
        self.token = token
        self.tokens = [token] + [f"{token}_{i}" for i in range(1, cfg.vectors)]

    def prepare(self, pipe) -> None:
        import torch

        self.pipe = pipe
        _freeze(pipe)
        tok, te = pipe.tokenizer, pipe.text_encoder
        known = set(tok.get_vocab())
        init_ids = self.check_tokens(tok)
        tok.add_tokens(self.tokens)
        te.resize_token_embeddings(len(tok), mean_resizing=False)  # the new rows are set just below
        self.ids = tok.convert_tokens_to_ids(self.tokens)
        emb = te.get_input_embeddings().weight
        with torch.no_grad():
            start = emb[init_ids[0]].clone() if init_ids else emb[: min(len(known), emb.shape[0] - len(self.ids))].mean(0)
            for i in self.ids:
                emb[i] = start
        emb.requires_grad_(True)
        self.embedding = emb
        self.frozen_rows = emb.detach().clone()
        mask = torch.ones(emb.shape[0], dtype=torch.bool)
        mask[self.ids] = False
        self.keep = mask

    def check_tokens(self, tok) -> list[int]:
        """Refuse a token the tokenizer already has and an --init-token that is not one token
        (train's preflight runs this before anything is written); returns the init token's ids."""
        for t in self.tokens:
            entry = known_word(tok, t)
            if entry:
                adds = f" with --vectors {len(self.tokens)} adds {t!r}, which" if t != self.token else ""
                raise UsageError(f"--token {self.token!r}{adds} is already a word of the tokenizer ({entry!r} in its "
                                 f"vocabulary); choose a new one, e.g. <{self.token}>")
        init_ids = tok.encode(self.cfg.init_token, add_special_tokens=False) if self.cfg.init_token else []
        if self.cfg.init_token and len(init_ids) != 1:
            raise UsageError(f"--init-token {self.cfg.init_token!r} is {len(init_ids)} tokens; give one word the tokenizer knows")
        return init_ids

    def param_groups(self) -> list[dict]:
        # no weight decay: it would also shrink rows that must not change
        return [{"params": [self.embedding], "lr": self.cfg.lr, "weight_decay": 0.0}]

    def trainable(self) -> dict:
        return {"text_encoder.embeddings": self.embedding}

    def after_step(self, step: int) -> None:
        import torch

        with torch.no_grad():  # only the new rows may change (Adam moves rows with zero grad too)
            self.embedding[self.keep] = self.frozen_rows[self.keep].to(self.embedding.dtype)

    def caption(self, text: str) -> str:
        # all N words wherever the caption names the token (the importer puts it first), else in front
        from ..adapters import ti

        tokenizer = getattr(getattr(self, "pipe", None), "tokenizer", None)
        ignore_case = ti.lowercases(tokenizer) if tokenizer is not None else False
        return ti.caption(text, self.token, len(self.tokens), ignore_case=ignore_case)

    def vectors(self):
        return self.embedding.detach()[self.ids].float().cpu().clone()

    def save(self, path: Path, metadata: dict[str, str]) -> Path:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "ti.safetensors"
            save_file({self.token: self.vectors().contiguous()}, str(raw), metadata={"format": "pt"})
            return _write_with_metadata(raw, path, {**metadata, "styler.ti_tokens": json.dumps(self.tokens)})

    def summary(self) -> dict:
        return {"trainable_params": len(self.ids) * self.embedding.shape[1], "tokens": self.tokens}


def make_method(cfg: TrainConfig, *, trigger: str = "", total_steps: int | None = None) -> Method:
    """The method of `cfg`; adalora needs the run's `total_steps` (its rank schedule follows them)."""
    if cfg.method == "lora":
        return LoraMethod(cfg)
    if cfg.method == "adalora":
        from .adalora import AdaLoraMethod

        if total_steps is None:
            raise ValueError("--method adalora needs the run's total steps")
        return AdaLoraMethod(cfg, total_steps)
    if cfg.method == "dreambooth":
        return DreamBoothMethod(cfg)
    return TextualInversionMethod(cfg, cfg.token or trigger)
