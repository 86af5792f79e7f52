"""`styler train --processes N`: data-parallel training in N local processes (gloo on CPU, NCCL on
GPUs) through accelerate. Rank 0 owns the run record, checkpoints and the adapter; each process
takes its share of every global batch, and gradients are averaged across processes."""

from __future__ import annotations

import os
import socket

from registry import Adapter, Registry, Run

from ..errors import StylerError
from .config import TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, home: str, cfg_dict: dict, resume, queue) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                       "STYLER_HOME": home})
    # share the cores between processes; set before torch starts its thread pools
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world)))
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"
    from .trainer import train

    cfg = TrainConfig(**cfg_dict)
    try:
        outcome = train(cfg, registry=Registry(home), console=None, resume=resume, rank=rank, world=world,
                        on_start=(lambda run_id: queue.put(("run", run_id))) if rank == 0 else None)
        if rank == 0:
            queue.put(("done", outcome.adapter.id if outcome.adapter else None, outcome.final_loss))
    except StylerError as exc:
        queue.put(("error", exc.message, exc.exit_code))
    except Exception as exc:  # reported to the parent as one line
        queue.put(("error", f"process {rank} failed: {type(exc).__name__}: {exc}", 1))


def train_parallel(cfg: TrainConfig, *, registry: Registry | None = None, console=None, resume: str | None = None):
    """Run `train` in cfg.processes processes and return rank 0's outcome."""
    import torch.multiprocessing as mp

    from .trainer import Outcome
    from .plan import make_plan

    reg = registry or Registry()
    if resume:
        from .trainer import _resume_config

        cfg, _ = _resume_config(reg, resume, cfg)
    plan = make_plan(cfg, reg)  # fail fast in this process, before spawning anything
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    if console is not None:
        console.print(f"[dim]training in {cfg.processes} processes ({plan.samples_per_step} samples per step)…[/]")
    procs = [ctx.Process(target=_worker, args=(r, cfg.processes, port, str(reg.home), cfg.to_dict(), resume, queue))
             for r in range(cfg.processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    messages = []
    while not queue.empty():
        messages.append(queue.get())
    errors = [m for m in messages if m[0] == "error"]
    if errors:
        raise StylerError(errors[0][1], exit_code=errors[0][2])
    done = [m for m in messages if m[0] == "done"]
    run_ids = [m[1] for m in messages if m[0] == "run"]
    if not done or not run_ids:
        codes = [p.exitcode for p in procs]
        raise StylerError(f"data-parallel training ended without a result (exit codes {codes})")
    run = reg.get(Run, run_ids[0])
    adapter = reg.get(Adapter, done[0][1]) if done[0][1] else None
    return Outcome(run, adapter, plan, done[0][2])
