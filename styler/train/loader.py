"""The uncached path's image loading: a torch DataLoader whose workers open, resize and augment
images while the loop trains, so a GPU never waits on PIL.

It is driven by stream positions, not by dataset indices: the sampler yields, in the loop's order,
the positions this process takes for every (step, micro-batch) from the first step to the last,
and each position maps to (epoch, index) through the run's shuffled stream. The pixels of a
position depend only on (seed, epoch, index) — see ImageCaptionDataset — so 0, 1 or 8 workers give
the same numbers. One iterator spans the whole run, so the workers start once (what
`persistent_workers` buys an epoch-by-epoch loader) and are shut down when the loop ends.
"""

from __future__ import annotations

import os

import torch

from ..errors import StylerError
AUTO_MAX_WORKERS = 4


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(world: int = 1) -> int:
    """min(4, this process's share of the CPUs − 1): one core stays with the training loop."""
    return max(0, min(AUTO_MAX_WORKERS, cpus() // max(world, 1) - 1))


def micro_batch_start(step: int, micro: int, *, batch: int, accum: int, world: int, rank: int) -> int:
    """The first stream position of this process's share of one micro-batch."""
    return ((step * accum + micro) * world + rank) * batch


class StreamSampler(torch.utils.data.Sampler):
    """Lists of stream positions: one per (step, micro-batch) of this process, from start_step on."""

    def __init__(self, *, batch: int, accum: int, world: int, rank: int, start_step: int, total_steps: int):
        self.batch, self.accum, self.world, self.rank = batch, accum, world, rank
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0) * self.accum

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.accum):
                start = micro_batch_start(step, micro, batch=self.batch, accum=self.accum, world=self.world,
                                          rank=self.rank)
                yield list(range(start, start + self.batch))


class StreamImages(torch.utils.data.Dataset):
    """Stream position → dict(pixels, pos); a styler error in a worker comes back as data, so the
    loop raises it as the one-line error it is (DataLoader would re-raise it with a traceback).
    `stream` maps positions to (epoch, index): the plan's SquareStream or BucketStream."""

    def __init__(self, images, stream):
        self.images, self.stream = images, stream

    def __len__(self) -> int:  # positions are unbounded; the sampler decides which are read
        return 2**62

    def __getitem__(self, pos: int) -> dict:
        (epoch, index), = self.stream.indices(int(pos), 1)
        try:
            self.images.set_epoch(epoch)
            pixels = self.images[index]["pixels"]
        except StylerError as exc:
            return {"pos": int(pos), "error": exc.message, "code": exc.exit_code}
        return {"pos": int(pos), "pixels": pixels}


def collate(batch: list[dict]) -> dict:
    bad = [b for b in batch if "error" in b]
    if bad:
        return {"pos": [b["pos"] for b in batch], "error": bad[0]["error"], "code": bad[0]["code"]}
    return {"pos": [b["pos"] for b in batch], "pixels": torch.stack([b["pixels"] for b in batch])}


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # PIL/numpy work; the loop's process keeps the cores it was given


def image_loader(images, *, stream, sampler: StreamSampler, workers: int, pin_memory: bool):
    """A DataLoader over the positions `sampler` yields (workers=0 loads in this process)."""
    kwargs = {}
    if workers > 0:
        kwargs.update(worker_init_fn=_init_worker, prefetch_factor=2)
    return torch.utils.data.DataLoader(StreamImages(images, stream), batch_sampler=sampler, num_workers=workers,
                                       collate_fn=collate, pin_memory=pin_memory, **kwargs)


class Batches:
    """The loop's side: `take(start, count)` returns the pixels of positions [start, start+count),
    which must be the next batch the sampler yielded (the loop asks in the same order)."""

    def __init__(self, loader):
        self.loader = loader
        self._it = iter(loader)

    def take(self, start: int, count: int):
        try:
            batch = next(self._it)
        except StopIteration:
            raise RuntimeError(f"the image loader ran out at stream position {start}") from None
        if batch["pos"] != list(range(start, start + count)):
            raise RuntimeError(f"the image loader is out of step: expected positions {start}…{start + count - 1}, "
                               f"got {batch['pos'][0]}…{batch['pos'][-1]}")
        if "error" in batch:
            raise StylerError(batch["error"], exit_code=batch["code"])
        return batch["pixels"]

    def close(self) -> None:
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()
