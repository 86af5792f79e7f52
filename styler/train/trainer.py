"""The training loop (accelerate underneath), shared by every method.

Each optimizer step takes `batch × accum × processes` samples from an endless stream shuffled per
epoch; each sample's randomness (latent sample, noise, timestep, flip) comes from a generator
seeded by (seed, step, stream position). A resumed run or a data-parallel run therefore
follows the same numbers as one uninterrupted process.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from registry import Adapter, Registry, Run

from ..errors import StylerError, UsageError
from . import checkpoint as ckpt
from .config import TrainConfig
from .loader import micro_batch_start
from .plan import Plan, build_pipeline, make_plan, mix_seed
from .runs import RunHandle, register_adapter, resume_run, start_run

VAL_TIMESTEPS = (100, 300, 500, 700, 900)


class TrainingFailed(StylerError):
    exit_code = 1


class TrainingInterrupted(StylerError):
    exit_code = 130


@dataclass
class Outcome:
    run: Run
    adapter: Adapter | None
    plan: Plan
    final_loss: float | None


def loss_target(sched, latents, noise, t):
    """What the UNet learns to predict, by the scheduler's prediction type (as diffusers'
    train_text_to_image_lora.py): the noise, the velocity, or the clean latents."""
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return sched.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise UsageError(f"unknown prediction_type {kind!r} in the base's scheduler config; styler trains epsilon, "
                     "v_prediction and sample")


def loss_weights(sched, t, gamma: float):
    """Min-SNR-γ weights (Hang et al. 2023) of a loss on the target above: min(SNR, γ) for an x0
    (sample) loss, divided by SNR for an ε loss and by SNR + 1 for a v loss."""
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(sched, t)
    weight = torch.minimum(snr, torch.full_like(snr, gamma))
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return weight / snr
    if kind == "v_prediction":
        return weight / (snr + 1)
    return weight


def adamw_options(groups: list[dict]) -> dict:
    """torch's fused AdamW where every parameter is on the CPU or a CUDA device: one kernel over
    all the adapter's tensors instead of a loop over them (on the tiny base with the demo's LoRA
    settings, a whole run takes 0.88-0.97 of the time; benchmarks/adamw_fused.py). Elsewhere (MPS,
    XLA) the default implementation."""
    devices = {p.device.type for g in groups for p in g["params"]}
    return {"fused": True} if devices and devices <= {"cpu", "cuda"} else {}


def _sample_generator(cfg: TrainConfig, step: int, pos: int):
    """A sample's own generator: its stream position is unique, so batch 2 and batch 1 × accum 2
    (or × 2 processes) give every sample the same noise."""
    import torch

    return torch.Generator().manual_seed(mix_seed(cfg.seed, step, pos))


class Trainer:
    def __init__(self, plan: Plan, *, registry: Registry, console=None, rank: int = 0, world: int = 1,
                 device: str | None = None):
        self.plan, self.cfg, self.reg = plan, plan.cfg, registry
        self.console, self.rank, self.world = console, rank, world
        self.placed = device  # a worker's --device ("cpu", "cuda:1"); None: accelerate's choice
        self.main = rank == 0
        self.batches = None  # the uncached path's image loader while the loop runs

    # -- setup -----------------------------------------------------------------------------
    def setup(self, handle: RunHandle) -> None:
        import torch
        from accelerate import Accelerator
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        from .captions import CaptionAugment
        from .data import BucketLatents, ImageCaptionDataset, LatentCache, load_items

        cfg = self.cfg
        self.handle = handle
        from accelerate.state import AcceleratorState

        # accelerate keeps one mixed-precision setting per process and refuses another; a process that
        # trains several times (`styler worker`, `styler demo`, tests) starts each run afresh. The
        # device/process-group state (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        cpu = not torch.cuda.is_available() or self.placed == "cpu"
        if self.placed and self.placed.startswith("cuda:"):
            # one process, one GPU: accelerate trains on the current CUDA device ("cuda")
            torch.cuda.set_device(int(self.placed.split(":")[1]))
        try:
            self.acc = Accelerator(mixed_precision=cfg.precision, cpu=cpu,
                                   log_with=cfg.log_with, project_dir=str(handle.dir))
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--precision {cfg.precision}: {exc}; on CPU use bf16 or no") from None
        self.device = self.acc.device
        self.pipe, self.method = build_pipeline(self.plan, str(self.device))
        pipe = self.pipe
        self.noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
        self.items = load_items(self.plan.dataset, self.reg.home, "train")
        self.val_items = load_items(self.plan.dataset, self.reg.home, "val") if self.plan.n_val else []
        self.captions = [self.method.caption(it.text) for it in self.items]
        self.caption_augment = CaptionAugment.from_config(cfg)
        self._warn_truncated()
        self.flip = "flip" in cfg.augment
        sizes = self.plan.train_sizes  # None without --buckets
        for line in self.plan.bucket_table():
            self._say(line)
        self.cache = None
        if cfg.cache_latents:
            key = {"dataset": self.plan.dataset.content_hash, "base": self.plan.base_identity.get("hash"),
                   "crop": "center"}
            common = dict(flip=self.flip, cache_dir=self.reg.home / "cache" / "latents", key=key, device=self.device,
                          dtype=pipe.vae.dtype, write=self.main)  # dtype: part of the key
            with self._rank0_first():  # rank 0 writes the cache; the others reuse it (or keep their own in memory)
                if sizes is None:
                    self.cache = LatentCache.build(pipe.vae, self.items, cfg.resolution, **common)
                else:  # one cache file per bucket, its size in its key
                    self.cache = BucketLatents.build(pipe.vae, self.items, sizes, **common)
            if self.cache.status == "rebuilt":
                self._say("the latent cache was damaged or stale and has been rebuilt")
            if sizes is not None:
                states = [c.status for c in self.cache.caches.values()]
                self._say(f"latents of {len(states)} bucket(s): " + ", ".join(
                    f"{states.count(s)} {s}" for s in ("reused", "built", "rebuilt") if s in states))
        self.images = ImageCaptionDataset(self.items, cfg.resolution, augment=set(cfg.augment), seed=cfg.seed,
                                          sizes=sizes)
        self.prior = None
        if cfg.method == "dreambooth":
            from .prior import ClassImages

            with self._rank0_first():
                self.prior = ClassImages.prepare(pipe, cfg, self.plan.base_identity, self.reg.home, self.device,
                                                 say=self._say, write=self.main)
        groups = self.method.param_groups()
        if cfg.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            self.optimizer = bnb.optim.AdamW8bit(groups, lr=cfg.lr)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=1e-2, **adamw_options(groups))
        self.lr_sched = get_scheduler(cfg.scheduler, self.optimizer, num_warmup_steps=cfg.warmup,
                                      num_training_steps=self.plan.total_steps)
        trained = [pipe.unet] + ([pipe.text_encoder] if cfg.text_encoder or cfg.method == "textual-inversion" else [])
        prepared = self.acc.prepare(*trained, self.optimizer)
        self.models = list(prepared[:-1])
        self.optimizer = prepared[-1]
        self.unet = self.models[0]
        self.text_encoder = self.models[1] if len(self.models) > 1 else pipe.text_encoder
        self.text_trained = cfg.text_encoder or cfg.method == "textual-inversion"
        self._text_cache: dict = {}
        self.clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if cfg.log_with and self.main:
            self.acc.init_trackers("styler", config={k: v for k, v in cfg.to_dict().items() if not isinstance(v, list)})

    def _rank0_first(self):
        """A block rank 0 runs before the other processes (they wait at a barrier, then run it)."""
        from contextlib import contextmanager

        @contextmanager
        def block():
            if self.world > 1 and not self.main:
                self.acc.wait_for_everyone()
            yield
            if self.world > 1 and self.main:
                self.acc.wait_for_everyone()

        return block()

    def _say(self, message: str) -> None:
        if self.console is not None and self.main:
            from rich.markup import escape

            self.console.print(f"[dim]{escape(message)}[/]")

    def _warn_truncated(self) -> None:
        from .data import truncated_prompts

        cut = truncated_prompts(self.pipe.tokenizer, self.captions)
        if cut:
            text, lost = cut[0]
            self._say(f"{len(cut)} caption(s) are longer than 77 tokens and were cut, e.g. …{lost[:60]!r} was dropped")

    # -- one step ---------------------------------------------------------------------------
    def _encode_text(self, texts: list[str], encoder=None):
        import torch

        from .data import tokenize

        if not self.text_trained and not self.cfg.shuffle_caption:
            # a frozen text encoder maps a caption to the same states every time: encode each once
            # (not with shuffled captions: nearly every step has new ones, and the cache would grow)
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
            if missing:
                with torch.no_grad():
                    states = self.text_encoder(tokenize(self.pipe.tokenizer, missing).to(self.device))[0]
                self._text_cache.update(zip(missing, states))
            return torch.stack([self._text_cache[t] for t in texts])
        ids = tokenize(self.pipe.tokenizer, texts).to(self.device)
        return (encoder or self.text_encoder)(ids)[0]

    def _latents_for(self, positions: list[tuple[int, int]], gens, pixels=None) -> tuple:
        """Latents of the samples at `positions`: from the cache, else by encoding `pixels` (what the
        image loader made of those positions) or, without a loader, the images loaded here."""
        import torch

        flips = [bool(torch.rand((), generator=g) < 0.5) if self.flip else False for g in gens]
        if self.cache is not None:
            lat = torch.cat([self.cache.latents([i], g, [f]) for (_, i), g, f in zip(positions, gens, flips)])
            return lat.to(self.device), flips
        if pixels is None:
            loaded = []
            for epoch, i in positions:
                self.images.set_epoch(epoch)
                loaded.append(self.images[i]["pixels"])
            pixels = torch.stack(loaded)
        vae = self.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.device, dtype=vae.dtype, non_blocking=True)).latent_dist
        noise = torch.stack([torch.randn(dist.mean.shape[1:], generator=g) for g in gens]).to(self.device)
        lat = (dist.mean.float() + dist.std.float() * noise) * vae.config.scaling_factor  # fp32 from here on
        return lat, flips

    def _diffusion_loss(self, latents, texts: list[str], gens, reduce: bool = True):
        import torch
        import torch.nn.functional as F

        cfg, sched = self.cfg, self.noise_sched
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in gens]).to(latents)
        if cfg.noise_offset:
            offset = torch.stack([torch.randn(latents.shape[1], 1, 1, generator=g) for g in gens]).to(latents)
            noise = noise + cfg.noise_offset * offset
        t = torch.stack([torch.randint(0, sched.config.num_train_timesteps, (), generator=g) for g in gens]).to(self.device)
        noisy = sched.add_noise(latents, noise, t)
        with self.acc.autocast():
            hidden = self._encode_text(texts)
            pred = self.unet(noisy, t, hidden).sample
        target = loss_target(sched, latents, noise, t)
        per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg.snr_gamma:
            per = per * loss_weights(sched, t, cfg.snr_gamma)
        return per.mean() if reduce else per

    def step_loss(self, step: int, micro: int):
        """The loss of this process's share of one micro-batch."""
        cfg = self.cfg
        b = cfg.batch
        start = micro_batch_start(step, micro, batch=b, accum=cfg.accum, world=self.world, rank=self.rank)
        positions = self.plan.stream.indices(start, b)
        gens = [_sample_generator(cfg, step, start + k) for k in range(b)]
        pixels = self.batches.take(start, b) if self.batches is not None else None
        latents, _ = self._latents_for(positions, gens, pixels)
        texts = [self.caption_augment.apply(self.captions[i], start + k) for k, (_, i) in enumerate(positions)]
        loss = self._diffusion_loss(latents, texts, gens)
        if self.prior is not None:
            pgens = [_sample_generator(cfg, step, -1 - (start + k)) for k in range(b)]
            plat = self.prior.latents(start, b, pgens).to(self.device)
            loss = loss + cfg.prior_weight * self._diffusion_loss(plat, [cfg.class_prompt] * b, pgens)
        return loss

    # -- validation -------------------------------------------------------------------------
    def val_loss(self) -> float | None:
        """Loss on the held-out split at fixed timesteps and noise (comparable across steps)."""
        import torch

        if not self.val_items:
            return None
        from .data import ImageCaptionDataset

        ds = ImageCaptionDataset(self.val_items, self.cfg.resolution, sizes=self.plan.val_sizes)
        # only rank 0 validates: use the modules without their DistributedDataParallel wrappers, whose
        # forward may talk to the other processes
        unet, text_encoder = self.acc.unwrap_model(self.unet), self.acc.unwrap_model(self.text_encoder)
        total = 0.0
        with torch.no_grad():
            for i in range(len(ds)):
                pixels = ds[i]["pixels"][None].to(self.device, dtype=self.pipe.vae.dtype)
                lat = self.pipe.vae.encode(pixels).latent_dist.mean * self.pipe.vae.config.scaling_factor
                for t in VAL_TIMESTEPS:
                    g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, i, t))
                    noise = torch.randn(lat.shape[1:], generator=g)[None].to(lat)
                    tt = torch.tensor([t], device=self.device)
                    with self.acc.autocast():
                        pred = unet(self.noise_sched.add_noise(lat, noise, tt), tt,
                                    self._encode_text([self.method.caption(self.val_items[i].text)], text_encoder)).sample
                    target = loss_target(self.noise_sched, lat, noise, tt)
                    total += float(torch.nn.functional.mse_loss(pred.float(), target.float()))
        return total / (len(ds) * len(VAL_TIMESTEPS))

    def validation_images(self, step: int) -> list[str]:
        from .validation import render_validation

        if not self.cfg.validation_prompts or not self.main:
            return []
        return render_validation(self, step)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, start_step: int = 0, monitor=None, state=None) -> float | None:
        import torch

        cfg, acc, plan = self.cfg, self.acc, self.plan
        metrics_path = self.handle.dir / "metrics.jsonl"
        loss_value = None
        step = start_step
        for m in self.models:
            m.train()
        self.batches = self._open_batches(start_step)
        try:
            while step < plan.total_steps:
                _injected_fault(self.rank, step)
                t0 = time.perf_counter()
                total = 0.0
                for micro in range(cfg.accum):
                    sync = micro == cfg.accum - 1
                    ctx = acc.no_sync(self.unet) if not sync and self.world > 1 else _null()
                    with ctx:
                        loss = self.step_loss(step, micro) / cfg.accum
                        # a penalty on the weights alone (AdaLoRA's) counts once per step, not per micro-batch
                        reg = self.method.regularisation() if sync else None
                        acc.backward(loss if reg is None else loss + reg)
                    total += float(loss.detach())  # the logged loss is the diffusion loss alone
                if self.world > 1:  # log the global batch's loss, not this process's share
                    loss_value = float(acc.reduce(torch.tensor(total, device=self.device), reduction="mean"))
                else:
                    loss_value = total
                if not math.isfinite(loss_value):
                    raise _NanLoss(step + 1)
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(self.clip_params, cfg.max_grad_norm)
                self.optimizer.step()
                self.lr_sched.step()
                self.method.after_step(step)  # AdaLoRA scores its ranks from these gradients
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                ranks = self.method.budget(step)
                lr = self.lr_sched.get_last_lr()[0]
                epoch = (step * plan.samples_per_step - 1) // plan.epoch_len
                if self.main:
                    row = {"step": step, "loss": loss_value, "lr": lr, "epoch": epoch, "time": time.time(),
                           "step_s": time.perf_counter() - t0, "memory": _memory_row(str(self.device))}
                    if ranks is not None:
                        row.update(rank_budget=ranks.budget, rank_allocated=ranks.allocated)
                    if state is not None:
                        state.record_step(step=step, loss=loss_value, lr=lr, epoch=epoch)
                        state.ranks = ranks
                    if cfg.validate_every and step % cfg.validate_every == 0 or step == plan.total_steps and cfg.validate_every:
                        row["val_loss"] = self.val_loss()
                        self.validation_images(step)
                        if state is not None:
                            state.val_loss = row["val_loss"]
                    from .trainer import write_metrics

                    write_metrics(metrics_path, row)
                    if cfg.log_with:
                        acc.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None}, step=step)
                    self.handle.update(step=step, loss=loss_value, force=step == plan.total_steps)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < plan.total_steps:
                        self.save_checkpoint(step, state)
                    if monitor is not None:
                        monitor.update(state)
        except KeyboardInterrupt:
            raise _Interrupted(step) from None
        finally:
            if self.batches is not None:
                self.batches.close()
                self.batches = None
        return loss_value

    def loader_workers(self) -> int:
        from .loader import auto_workers

        return self.cfg.loader_workers if self.cfg.loader_workers is not None else auto_workers(self.world)

    def _open_batches(self, start_step: int):
        """The uncached path loads and augments images in DataLoader workers (none with the cache)."""
        if self.cache is not None:
            return None
        from .loader import Batches, StreamSampler, image_loader

        cfg = self.cfg
        sampler = StreamSampler(batch=cfg.batch, accum=cfg.accum, world=self.world, rank=self.rank,
                                start_step=start_step, total_steps=self.plan.total_steps)
        self.loader = image_loader(self.images, stream=self.plan.stream, sampler=sampler, workers=self.loader_workers(),
                                   pin_memory=self.device.type == "cuda")
        return Batches(self.loader)

    def save_checkpoint(self, step: int, state=None) -> Path | None:
        if not self.main:
            return None
        path = ckpt.save_checkpoint(self.handle.dir, step, trainable=self.method.trainable(), optimizer=self.optimizer,
                                    lr_scheduler=self.lr_sched, state={"step": step, "dataset": self.plan.dataset.id},
                                    scaler=self.acc.scaler)  # fp16: the loss scale goes on where it was
        ckpt.prune_checkpoints(self.handle.dir, self.cfg.keep_checkpoints)
        if state is not None:
            state.last_checkpoint = step
            state.note = f"checkpoint saved at step {step}"
        return path

    def restore(self, path: Path) -> int:
        saved = ckpt.load_checkpoint(path, trainable=self.method.trainable(), optimizer=self.optimizer,
                                     lr_scheduler=self.lr_sched, scaler=self.acc.scaler)
        self.method.after_restore()
        return int(saved["step"])


class _WorkerHandle:
    """What a non-main data-parallel process holds instead of the run record: it writes nothing."""

    def __init__(self, reg: Registry, run_id: str | None):
        self.registry, self.id = reg, run_id or ""
        self.dir = reg.home / "runs" / run_id if run_id else Path(os.devnull)
        self.run = None

    def update(self, **_):
        pass

    def end(self, *_ , **__):
        pass


def _init_distributed() -> None:
    """The process group of a data-parallel run, from the launcher's environment (RANK, WORLD_SIZE,
    MASTER_ADDR/PORT): NCCL on GPUs, gloo on CPUs. The Accelerator made later reuses it."""
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


_ID_BYTES = 64


def _id_tensor():
    import torch
    from accelerate import PartialState

    return torch.zeros(_ID_BYTES, dtype=torch.uint8, device=PartialState().device)


def _send_run_id(run_id: str) -> None:
    import torch
    import torch.distributed as dist

    buf = _id_tensor()
    data = run_id.encode("ascii")[:_ID_BYTES]
    if data:
        buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    dist.broadcast(buf, src=0)


def _receive_run_id() -> str:
    import torch.distributed as dist

    buf = _id_tensor()
    dist.broadcast(buf, src=0)
    run_id = bytes(buf.cpu().tolist()).rstrip(b"\0").decode("ascii")
    if not run_id:
        raise TrainingFailed("rank 0 could not start the run (see its error); this process stops too")
    return run_id


FAULT_ENV = "STYLER_TEST_FAULT"


def _injected_fault(rank: int, step: int) -> None:
    """A test hook: STYLER_TEST_FAULT=RANK:STEP:exit|raise makes process RANK crash (exit code 3,
    no report) or raise when it starts step STEP (0-based)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    r, s, mode = spec.split(":")
    if int(r) != rank or int(s) != step:
        return
    if mode == "exit":
        os._exit(3)
    raise RuntimeError(f"injected fault at step {step}")


class _NanLoss(Exception):
    def __init__(self, step: int):
        self.step = step


class _Interrupted(Exception):
    def __init__(self, step: int):
        self.step = step


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _device_name(device) -> str:
    """"cuda:0" for accelerate's bare "cuda" device (the one this process uses), else as is."""
    text = str(device)
    if text == "cuda":
        import torch

        text = f"cuda:{torch.cuda.current_device()}"
    return text


def _memory_row(device: str) -> dict:
    """This step's memory numbers for metrics.jsonl (what `styler tui` shows for a live run)."""
    from .monitor import sample_memory

    m = sample_memory(device)
    keys = ("allocated", "reserved", "peak") if m.kind == "cuda" else ("rss", "system_used")
    return {k: getattr(m, k) for k in keys if getattr(m, k) is not None}


def write_metrics(path: Path, row: dict) -> None:
    import json

    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


class _TermAsInterrupt:
    """SIGTERM behaves like Ctrl-C, so a killed run still saves a checkpoint."""

    def __enter__(self):
        try:
            self.prev = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        return False


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def train(cfg: TrainConfig, *, registry: Registry | None = None, console=None, resume: str | None = None,
          rank: int = 0, world: int = 1, monitor_every: int | None = None, on_start=None, monitor=None,
          device: str | None = None) -> Outcome:
    """Run a training end to end: plan, run record, loop, checkpoints, adapter registration.

    With world > 1 this is one process of a data-parallel run (styler's --processes, torchrun or
    accelerate launch): rank 0 creates or resumes the run record and sends its id to the others;
    only rank 0 writes anything. `monitor` replaces the LiveMonitor rank 0 would show on `console`
    (--processes sends the progress to its parent, which shows it; `styler worker` logs it and stops
    the loop through it). `device` ("cpu", "cuda:N", from the worker's resolved --device) places a
    single-process run; without it accelerate picks (the current GPU, else the CPU)."""
    from .monitor import LiveMonitor, TrainState

    reg = registry or Registry()
    start_step = 0
    if resume:
        cfg, resume_ckpt = _resume_config(reg, resume, cfg, check_running=rank == 0)
    if cfg.processes != world:
        raise UsageError(f"this run trains with {cfg.processes} process(es) (its global batch is batch × accum × "
                         f"processes), not {world}; use --processes {cfg.processes} or a launcher with "
                         f"{cfg.processes} processes in all")
    plan = make_plan(cfg, reg)
    trainer = Trainer(plan, registry=reg, console=console, rank=rank, world=world, device=device)
    if world > 1:
        _init_distributed()
    if rank != 0:
        handle = _WorkerHandle(reg, _receive_run_id())
    else:
        try:
            handle = resume_run(reg, resume, cfg, plan.total_steps, _checkpoint_step(resume_ckpt)) if resume else start_run(
                reg, cfg, plan.dataset, plan.base_identity, plan.total_steps)
        except BaseException:
            if world > 1:
                _send_run_id("")  # the other processes stop instead of waiting for an id
            raise
        if world > 1:
            _send_run_id(handle.id)
    if on_start is not None:
        on_start(handle.id)
    if trainer.main and console is not None and cfg.validate_every and cfg.validation_prompts:
        console.print(f"[dim]validation images every {cfg.validate_every} steps "
                      f"({len(cfg.validation_prompts)} prompt(s)) go to {handle.dir / 'samples'}[/]")
    state = None
    adapter = final = None
    show = trainer.main and (console is not None or monitor is not None)
    try:
        trainer.setup(handle)
        if trainer.main:
            from ..device import PRECISION_DTYPE

            handle.update(force=True, device=_device_name(trainer.device),
                          dtype=PRECISION_DTYPE.get(cfg.precision, "fp32"))
        if resume and resume_ckpt is not None:
            start_step = trainer.restore(resume_ckpt)
        state = TrainState(run_id=handle.id, name=cfg.name or plan.dataset.name, method=cfg.method,
                           total_steps=plan.total_steps, device=str(trainer.device), resumed_from=start_step,
                           ranks=trainer.method.budget(start_step))
        shown = monitor if monitor is not None else LiveMonitor(console=console, every=monitor_every or cfg.log_every)
        with _TermAsInterrupt(), (shown if show else _null()) as mon:
            final = trainer.run(start_step, monitor=mon if show else None, state=state)
            if trainer.main:
                state.note = "saving the adapter"
                adapter = _register(trainer, handle, final)
                state.status, state.note = "completed", f"registered {adapter.label}"
                if show:
                    mon.update(state, final=True)
    except _NanLoss as exc:
        last = ckpt.latest_checkpoint(handle.dir)
        kept = f"the last good checkpoint is step {ckpt.checkpoint_step(last)}" if last else "no checkpoint was saved"
        msg = (f"the loss became NaN/inf at step {exc.step}; stopped, {kept}. Try --precision bf16 or --precision no, "
               f"or a lower --lr")
        handle.end("failed", error=msg)
        raise TrainingFailed(msg) from None
    except _Interrupted as exc:
        note = "no step finished, nothing to save"
        if exc.step > 0:
            try:
                trainer.save_checkpoint(exc.step, state)
                note = f"checkpoint saved at step {exc.step}"
            except StylerError as err:
                note = err.message
        handle.end("interrupted", step=exc.step, error=f"interrupted at step {exc.step}")
        raise TrainingInterrupted(f"interrupted at step {exc.step}/{plan.total_steps} ({note}); "
                                  f"continue with `styler train --resume {handle.id}`") from None
    except StylerError as exc:
        handle.end("failed", error=exc.message)
        raise
    except Exception as exc:
        handle.end("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if getattr(trainer, "acc", None) is not None and cfg.log_with:
            trainer.acc.end_training()
    if trainer.main:
        results = trainer.method.results()
        handle.end("completed", step=plan.total_steps, loss=final, adapter_id=adapter.id, results=results)
        if console is not None and "adalora" in results:
            from .adalora import summary_line

            console.print(f"adalora {summary_line(results['adalora'])}", markup=False, highlight=False)
    return Outcome(handle.run, adapter, plan, final)


def _checkpoint_step(path: Path | None) -> int:
    return ckpt.checkpoint_step(path) if path is not None else 0


def _register(trainer: Trainer, handle: RunHandle, final: float | None) -> Adapter:
    """Save and register the adapter; a failure names the checkpoint that survives it."""
    try:
        return register_adapter(handle, trainer.cfg, trainer.plan.dataset, trainer.plan.base_identity,
                                trainer.method, {"steps": trainer.plan.total_steps, "final_loss": final})
    except StylerError as exc:
        last = ckpt.latest_checkpoint(handle.dir)
        kept = f"; the last good checkpoint (step {ckpt.checkpoint_step(last)}) is intact" if last else ""
        raise TrainingFailed(f"{exc.message}{kept}; resume with `styler train --resume {handle.id}`") from None


def _resume_config(reg: Registry, run_id: str, given: TrainConfig,
                   check_running: bool = True) -> tuple[TrainConfig, Path | None]:
    from .config import build_config

    run = reg.get(Run, run_id)  # a run whose process is gone reads as interrupted (Run.from_dict)
    if check_running and run.status == "running" and run.pid != os.getpid():
        where = f" on {run.host}" if run.host and run.host != socket.gethostname() else ""
        raise UsageError(f"run {run_id} is still running (pid {run.pid}{where}); stop it first, or start a new run")
    if run.status == "completed":
        raise UsageError(f"run {run_id} already completed; start a new run instead")
    saved = build_config(run.config)
    for key in ("base", "method"):
        mine, theirs = getattr(given, key), getattr(saved, key)
        if mine and mine != theirs and not (key == "method" and mine == "lora" and given.dataset == ""):
            raise UsageError(f"--resume {run_id}: that run used {key} {theirs or 'default'!r}, not {mine!r}; "
                             f"resume without --{key} or start a new run")
    last = ckpt.latest_checkpoint(reg.home / "runs" / run_id)
    if last is None and run.status not in ("interrupted", "failed"):
        raise UsageError(f"run {run_id} has no complete checkpoint to resume from; start it again")
    # a run that stopped (interrupted or failed) before its first checkpoint starts again from step 0
    if given.steps is not None and given.steps != saved.steps:
        if saved.method == "adalora":
            raise UsageError(f"--resume {run_id} --steps {given.steps}: an adalora run's rank schedule was set by its "
                             f"{saved.steps} steps; resume without --steps, or start a new run")
        done = _checkpoint_step(last)
        if given.steps < done:
            raise UsageError(f"--steps {given.steps} is below step {done}, where run {run_id}'s last checkpoint is; "
                             f"give --steps {done} or more, or start a new run")
        # the run's stored config follows (resume_run), so it reruns as the run it became
        saved = build_config({**saved.to_dict(), "steps": given.steps, "epochs": None})
    if given.loader_workers is not None:  # how images are loaded never changes the numbers
        saved = build_config({**saved.to_dict(), "loader_workers": given.loader_workers})
    return saved, last

