"""Aspect-ratio buckets: which width×height each training image trains at, and the order of
single-bucket batches.

What kohya sd-scripts users compare against (read from kohya-ss/sd-scripts at commit
48d368fa557731ad0488c07304dfeba8c07910eb: library/model_util.py make_bucket_resolutions and
library/train_util.py BucketManager.select_bucket; this is styler's own code, not a copy):

- The pixel budget is resolution². The bucket list is the square that fits the budget plus, for
  every width from the smallest side to the largest in steps, the tallest height (a multiple of
  the step, at most the largest side) that keeps width×height within the budget, in both
  orientations; a pair is kept when that height is at least the smallest side.
- An image goes to the bucket whose aspect ratio is nearest its own (the first of the sorted
  list on a tie), is scaled so that it covers the bucket, and is center-cropped to it: the crop
  only ever cuts the one side that overshoots.
- With no-upscale the list is not used (nor the smallest and largest sides, as in kohya): an
  image over the budget is scaled down, aspect kept, to fit it with one side on a step (the side
  whose rounding keeps the shape better), and its bucket is the largest step multiple inside that
  (each side rounded down), so nothing is ever enlarged; an image within the budget keeps its size
  and loses only the remainders of its sides. Where kohya's rounding leaves a side of 0 (a long
  image in a small budget, such as the tiny base's 64²), styler gives the short side one step and
  the long side what the budget allows, still without enlarging; an image with a side shorter
  than one step has no bucket and is refused.

The step defaults to the base's own: the VAE's factor times the UNet's downsampling (64 on
SD-1.5: 8 × 2³; 32 on the tiny base: 8 × 2²), so every bucket's latents pass the UNet's
downsamplers without a remainder. The smallest and largest sides default to resolution / 2 and
resolution × 2 (kohya's 256 and 1024 at 512).

A batch only ever holds one bucket, and so does every optimizer step: each epoch every bucket's
images are shuffled and cut into groups of one global batch (batch × accum × processes); a
bucket's last group is filled up with its own images drawn again, so every group is full, and
the groups of an epoch are shuffled. Stream position p is then slot p % G of group p // G, and
every micro-batch of every process (`batch` consecutive positions, aligned) lies inside one group.
So the loop's arithmetic stays as it is, and two processes at batch 1, or accum 2 at batch 1, see
the same images in the same steps as one process at batch 2, as they do without buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import InputError, UsageError

Size = tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class BucketSpec:
    """The bucket rules of a run: a pixel budget of resolution², sides in steps of `step`."""

    resolution: int
    step: int
    min_side: int
    max_side: int
    no_upscale: bool = False

    @property
    def budget(self) -> int:
        return self.resolution * self.resolution


def base_step(vae_scale: int, unet_down_blocks: int) -> int:
    """The bucket step a base wants: its VAE factor times the UNet's total downsampling."""
    return int(vae_scale) * 2 ** max(int(unet_down_blocks) - 1, 0)


def resolve_spec(resolution: int, *, step: int | None, min_side: int | None, max_side: int | None,
                 no_upscale: bool, vae_scale: int, default_step: int) -> BucketSpec:
    """Fill in the defaults and check the rules against the base; one UsageError naming the fix."""
    step = int(step) if step is not None else default_step
    if step < vae_scale or step % vae_scale:
        raise UsageError(f"--bucket-reso-steps {step} must be a multiple of the VAE's factor {vae_scale} "
                         f"(bucket sides become latents 1/{vae_scale} the size); use {default_step}, this base's own step")
    if resolution < step:
        raise UsageError(f"the bucket budget --resolution {resolution} is smaller than one bucket step ({step} px); "
                         f"use --resolution {step} or more, or --bucket-reso-steps {min(default_step, resolution // vae_scale * vae_scale)}")
    lo = int(min_side) if min_side is not None else max(step, resolution // 2 // step * step)
    hi = int(max_side) if max_side is not None else resolution * 2 // step * step
    for name, value in (("--min-bucket-reso", lo), ("--max-bucket-reso", hi)):
        if value < step or value % step:
            raise UsageError(f"{name} {value} must be a multiple of --bucket-reso-steps {step} and at least {step} "
                             f"(e.g. {max(step, value // step * step)})")
    if lo > resolution:
        raise UsageError(f"--min-bucket-reso {lo} is larger than --resolution {resolution}, so no bucket fits the "
                         f"budget; use --min-bucket-reso {max(step, resolution // 2 // step * step)} or less")
    if hi < resolution:
        raise UsageError(f"--max-bucket-reso {hi} is smaller than --resolution {resolution}, which leaves out even "
                         f"the square bucket; use --max-bucket-reso {resolution * 2 // step * step} or more")
    return BucketSpec(int(resolution), step, lo, hi, bool(no_upscale))


def bucket_sizes(spec: BucketSpec) -> list[Size]:
    """The bucket list (sorted) for the image-scaling mode."""
    step, lo, hi = spec.step, spec.min_side, spec.max_side
    side = math.isqrt(spec.budget) // step * step
    sizes = {(side, side)}
    for width in range(lo, hi + 1, step):
        height = min(hi, spec.budget // width // step * step)
        if height >= lo:
            sizes.update({(width, height), (height, width)})
    return sorted(sizes)


def choose_bucket(width: int, height: int, spec: BucketSpec, sizes: Sequence[Size] | None = None) -> Size:
    """The bucket an image of width×height trains in."""
    if spec.no_upscale:
        return _largest_inside(width, height, spec)
    sizes = list(sizes) if sizes is not None else bucket_sizes(spec)
    if (width, height) in sizes:
        return (width, height)
    aspect = width / height
    return min(sizes, key=lambda s: abs(s[0] / s[1] - aspect))  # min keeps the first on a tie


def _largest_inside(width: int, height: int, spec: BucketSpec) -> Size:
    step = spec.step
    if min(width, height) < step:
        raise InputError(f"a {width}×{height} image has a side under one bucket step ({step} px), so --no-upscale "
                         f"has no bucket for it; drop --no-upscale (it will be enlarged), use a smaller "
                         f"--bucket-reso-steps, or remove the image")
    aspect = width / height
    w, h = width, height
    if width * height > spec.budget:
        # scale to the budget, then put one side on a step: the one whose rounding keeps the shape better
        fit_w = math.sqrt(spec.budget * aspect)
        fit_h = spec.budget / fit_w
        by_w, by_h = _to_step(fit_w, step), _to_step(fit_h, step)
        shape_w = by_w / _to_step(by_w / aspect, step) if _to_step(by_w / aspect, step) else math.inf
        shape_h = _to_step(by_h * aspect, step) / by_h if by_h else math.inf
        if abs(shape_w - aspect) < abs(shape_h - aspect):
            w, h = by_w, int(by_w / aspect + 0.5)
        else:
            w, h = int(by_h * aspect + 0.5), by_h
    w, h = w // step * step, h // step * step
    if w >= step and h >= step:
        return (w, h)
    # a long image in a small budget: the short side takes one step, the long side what the budget
    # allows, neither larger than the image (kohya's rounding leaves a side of 0 here)
    wide = width >= height
    short, long_ = (height, width) if wide else (width, height)
    other = max(step, min(spec.budget // step // step * step, int(long_ * step / short) // step * step))
    return (other, step) if wide else (step, other)


def _to_step(x: float, step: int) -> int:
    """x to the nearest pixel, then down to a multiple of step."""
    x = int(x + 0.5)
    return x - x % step


def image_size(path: Path) -> Size:
    """width×height of an image file as it will be decoded (EXIF rotation applied), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
                w, h = h, w
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read training image {path}: {exc}") from None
    return (w, h)


def assign_buckets(paths: Sequence[Path], spec: BucketSpec) -> list[Size]:
    """The bucket of every image, in order."""
    sizes = None if spec.no_upscale else bucket_sizes(spec)
    out = []
    for p in paths:
        try:
            out.append(choose_bucket(*image_size(p), spec, sizes))
        except InputError as exc:
            raise InputError(f"training image {p.name}: {exc.message}") from None
    return out


def bucket_counts(assigned: Sequence[Size]) -> list[tuple[Size, int]]:
    """(bucket, images) sorted by width then height."""
    return sorted(Counter(assigned).items())


def describe(spec: BucketSpec, assigned: Sequence[Size]) -> list[str]:
    """The bucket table printed at the start of a run: a heading, then one line per bucket."""
    mode = "no upscaling" if spec.no_upscale else f"sides {spec.min_side}–{spec.max_side}"
    lines = [f"buckets within {spec.resolution}² px, steps of {spec.step}, {mode} (width×height → images):"]
    for (w, h), n in bucket_counts(assigned):
        lines.append(f"  {w:>5}×{h:<5} → {n}")
    return lines


class BucketStream:
    """The endless stream of training samples in single-bucket groups (see the module docstring);
    `batch` is the global batch, batch × accum × processes.

    `indices(start, count)` gives (epoch, dataset index) for stream positions [start, start+count),
    as `plan.stream_indices` does for square training."""

    def __init__(self, seed: int, assigned: Sequence[Size], batch: int):
        self.seed, self.batch = int(seed), int(batch)
        groups: dict[Size, list[int]] = {}
        for i, size in enumerate(assigned):
            groups.setdefault(tuple(size), []).append(i)
        self.groups = [groups[s] for s in sorted(groups)]
        self.batches_per_epoch = sum(math.ceil(len(g) / self.batch) for g in self.groups)
        self.epoch_len = self.batches_per_epoch * self.batch  # samples per epoch, refills included
        self._epochs: dict[int, list[list[int]]] = {}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The groups of one epoch, each `batch` dataset indices from one bucket."""
        if epoch not in self._epochs:
            import torch

            from .plan import mix_seed

            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 11))
            batches = []
            for members in self.groups:
                order = [members[k] for k in torch.randperm(len(members), generator=g).tolist()]
                for start in range(0, len(order), self.batch):
                    chunk = order[start:start + self.batch]
                    chunk += [order[k % len(order)] for k in range(self.batch - len(chunk))]  # refill the last
                    batches.append(chunk)
            if len(self._epochs) > 1:  # a micro-batch spans at most two epochs
                self._epochs.pop(next(iter(self._epochs)))
            self._epochs[epoch] = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
        return self._epochs[epoch]

    def indices(self, start: int, count: int) -> list[tuple[int, int]]:
        out = []
        for pos in range(start, start + count):
            q, slot = divmod(pos, self.batch)
            epoch, b = divmod(q, self.batches_per_epoch)
            out.append((epoch, self.epoch_batches(epoch)[b][slot]))
        return out


class SquareStream:
    """The plain shuffled stream (every image at resolution², any images in a batch)."""

    def __init__(self, seed: int, n: int):
        self.seed, self.n, self.epoch_len = int(seed), int(n), int(n)

    def indices(self, start: int, count: int) -> list[tuple[int, int]]:
        from .plan import stream_indices

        return stream_indices(self.seed, self.n, start, count)
