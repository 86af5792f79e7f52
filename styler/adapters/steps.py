"""An adapter's weights at an earlier step of the run that trained it, read from the run's checkpoints
(`runs/<run>/checkpoints/step-NNNNNNN/trainable.safetensors`, styler.train.checkpoint): what a grid's
`step=` axis renders. A run saves a checkpoint every --checkpoint-every steps and keeps the newest
--keep-checkpoints (3 unless set); the adapter's own file is its final step."""

from __future__ import annotations

from pathlib import Path

from registry import Adapter, NotFound, Registry, Run

from ..errors import InputError, UsageError
from .lora import AdapterData


def final_step(reg: Registry, record: Adapter) -> int | None:
    """The step the adapter's own file was saved at (its run's last)."""
    steps = (record.metadata or {}).get("steps")
    if isinstance(steps, int):
        return steps
    try:
        return reg.get(Run, record.run_id).total_steps if record.run_id else None
    except NotFound:
        return None


def saved_steps(reg: Registry, record: Adapter) -> dict[int, Path | None]:
    """Every step the adapter's weights can be had at: a complete checkpoint's folder, or None for the
    final step (the adapter's own file)."""
    from ..train.checkpoint import checkpoint_step, list_checkpoints

    found: dict[int, Path | None] = {}
    if record.run_id:
        found.update({checkpoint_step(p): p for p in list_checkpoints(reg.home / "runs" / record.run_id)})
    last = final_step(reg, record)
    if last is not None:
        found[last] = None
    return dict(sorted(found.items()))


def checkpoint_for(reg: Registry, record: Adapter, step: int) -> Path | None:
    """The checkpoint folder of `step` (None: the final step); a step not saved is a one-line error
    that lists the steps there are."""
    if not record.run_id:
        raise UsageError(f"{record.label} was {record.method or 'imported'}, not trained by styler "
                         f"here, so it has no training steps to choose from")
    steps = saved_steps(reg, record)
    if step not in steps:
        have = ", ".join(map(str, steps)) or "none"
        raise UsageError(f"step {step}: {record.label} has no weights saved at that step; its run "
                         f"{record.run_id} kept steps {have}. Train with --checkpoint-every N (the newest "
                         f"--keep-checkpoints, 3 by default, are kept) to have more")
    return steps[step]


def read_at_step(folder: Path, final: AdapterData) -> AdapterData:
    """The weights in checkpoint `folder` in the form of the adapter's own file `final` (its layers and
    their alpha, or its tokens): the same adapter, earlier in training."""
    from safetensors import safe_open

    from .formats import read_adapter

    path = folder / "trainable.safetensors"
    if not path.is_file():
        raise InputError(f"checkpoint {folder} has no trainable.safetensors; it is damaged")
    if final.kind == "textual-inversion":
        try:
            with safe_open(str(path), framework="pt") as fh:
                rows = fh.get_tensor("text_encoder.embeddings")
        except Exception as exc:  # noqa: BLE001 - SafetensorError, KeyError: a damaged or foreign file
            raise InputError(f"checkpoint {folder}: no textual-inversion embeddings in it ({exc})") from None
        # the new tokens were added last (tokenizer.add_tokens), so theirs are the embedding's last rows
        embeddings, end = {}, rows.shape[0]
        for token, vectors in reversed(list(final.embeddings.items())):
            n = vectors.shape[0]
            embeddings[token] = rows[end - n:end].to(vectors.dtype).clone()
            end -= n
        return AdapterData("textual-inversion", embeddings=dict(reversed(list(embeddings.items()))),
                           metadata={"checkpoint": str(folder)}, format="checkpoint")
    data = read_adapter(path)
    if set(data.layers) != set(final.layers):
        extra = sorted(set(data.layers) ^ set(final.layers))[:1]
        raise InputError(f"checkpoint {folder} does not match the adapter's layers (e.g. {'.'.join(extra[0])}); "
                         f"was the run resumed with other --targets?")
    from dataclasses import replace

    layers = {k: replace(layer, alpha=final.layers[k].alpha) for k, layer in data.layers.items()}
    return AdapterData("lora", layers=layers, metadata={"checkpoint": str(folder)}, format="checkpoint")
