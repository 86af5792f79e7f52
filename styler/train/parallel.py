"""`styler train --processes N`: data-parallel training in N local processes (gloo on CPU, NCCL on
GPUs) through accelerate. Rank 0 owns the run record, checkpoints and the adapter; each process
takes its share of every global batch, and gradients are averaged across processes.

The parent supervises: rank 0 sends it the run id, its progress (shown with the same live panel or
plain lines as single-process training) and its result through a queue; every process reports an
error as one line. The parent polls its children, so one that dies (killed, crashed, or failed
before a collective, where the others would wait for it forever) ends the run: the others are
stopped, the run is marked failed, and one line names the rank and the reason.
"""

from __future__ import annotations

import os
import queue as queue_mod
import re
import signal
import socket
import time
from dataclasses import dataclass

from registry import Adapter, Registry, Run, now_iso

from ..errors import StylerError
from .config import TrainConfig

POLL_S = 0.2  # how often the parent looks at its children
SETTLE_S = 1.0  # after the first failure, how long to collect the other processes' reports
STOP_GRACE_S = 10.0  # SIGTERM (a stopped rank 0 saves a checkpoint), then SIGKILL after this
INTERRUPT_GRACE_S = 60.0  # Ctrl-C: how long the processes get to save and stop by themselves
# what a process says when it only lost a peer: a consequence, never the cause
_PEER_ERROR = re.compile(r"gloo|nccl|connection (closed|reset)|broken pipe|timed out|peer|socket", re.IGNORECASE)


def launcher_env(environ=None) -> tuple[int, int] | None:
    """(rank, world size) when a launcher — torchrun, accelerate launch, srun + torchrun — started this
    process as one of several (RANK and WORLD_SIZE set, WORLD_SIZE > 1); None otherwise."""
    from ..errors import UsageError

    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r}, RANK={env.get('RANK')!r}: a launcher sets whole "
                         "numbers; unset them to train in one process") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is not in 0…{world - 1} (WORLD_SIZE={world})")
    return rank, world


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QueueMonitor:
    """Rank 0's stand-in for LiveMonitor: sends each state to the parent, memory sampled here at
    most once a second (the parent's own memory is not the training's)."""

    def __init__(self, queue, sample_every_s: float = 1.0):
        self.queue, self.sample_every_s = queue, sample_every_s
        self._memory_at = -1e18
        self._memory = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, state, final: bool = False) -> None:
        from .monitor import sample_memory

        now = time.monotonic()
        if final or now - self._memory_at >= self.sample_every_s:
            self._memory, self._memory_at = sample_memory(state.device), now
        self.queue.put(("progress", {
            "run_id": state.run_id, "name": state.name, "method": state.method, "total_steps": state.total_steps,
            "device": state.device, "resumed_from": state.resumed_from, "step": state.step, "epoch": state.epoch,
            "loss": state.loss, "lr": state.lr, "val_loss": state.val_loss, "status": state.status,
            "last_checkpoint": state.last_checkpoint, "note": state.note, "memory": self._memory, "final": final,
        }))


class _QueueConsole:
    """Rank 0's console: its notes (cache rebuilt, class images, …) go to the parent to print."""

    def __init__(self, queue):
        self.queue = queue

    def print(self, text, *_, **__) -> None:
        self.queue.put(("say", str(text)))


def _is_peer_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    kinds = tuple(k for k in (getattr(dist, "DistBackendError", None), getattr(dist, "DistNetworkError", None)) if k)
    return isinstance(exc, kinds) or bool(_PEER_ERROR.search(str(exc)))


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "…"


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
    main = rank == 0
    try:
        outcome = train(cfg, registry=Registry(home), console=_QueueConsole(queue) if main else None, resume=resume,
                        rank=rank, world=world, on_start=(lambda run_id: queue.put(("run", run_id))) if main else None,
                        monitor=_QueueMonitor(queue) if main else None)
        if main:
            queue.put(("done", outcome.adapter.id if outcome.adapter else None, outcome.final_loss))
    except StylerError as exc:
        queue.put(("error", rank, exc.message, exc.exit_code, False))
    except Exception as exc:  # reported to the parent as one line
        queue.put(("error", rank, _one_line(f"{type(exc).__name__}: {exc}"), 1, _is_peer_error(exc)))


@dataclass
class Failure:
    rank: int
    message: str  # already one line
    exit_code: int
    peer: bool = False  # only lost contact with another process
    crashed: bool = False  # ended without a report


def root_cause(failures: list[Failure]) -> Failure:
    """The failure to report: a process's own error first (lowest rank), then a process that died
    without a report, then one that only lost its peers."""
    own = sorted((f for f in failures if not f.peer and not f.crashed), key=lambda f: f.rank)
    crashed = sorted((f for f in failures if f.crashed), key=lambda f: f.rank)
    peer = sorted((f for f in failures if f.peer and not f.crashed), key=lambda f: f.rank)
    return (own or crashed or peer)[0]


def failure_message(f: Failure, world: int) -> str:
    if f.crashed:
        if f.exit_code < 0:
            try:
                name = signal.Signals(-f.exit_code).name
            except ValueError:
                name = f"signal {-f.exit_code}"
            what = f"was killed by {name}"
        else:
            what = f"exited with code {f.exit_code}"
        return f"rank {f.rank} of {world} {what} before finishing; the other process(es) were stopped"
    if f.rank == 0 and not f.peer:
        return f.message  # the run's own message (NaN, a failed save, …) as single-process training gives it
    return f"rank {f.rank} of {world} failed: {f.message}; the other process(es) were stopped"


class _Supervisor:
    """Polls the children and the queue, shows rank 0's progress, and stops everything on a failure."""

    def __init__(self, procs, queue, world: int, console, log_every: int):
        self.procs, self.queue, self.world = procs, queue, world
        self.console, self.log_every = console, log_every
        self.run_id = None
        self.done = None
        self.failures: list[Failure] = []
        self.reported: set[int] = set()
        self.stopping = False  # once the parent stops the processes, what they report is a consequence
        self.state = None
        self.monitor = None
        self._memory = None

    # -- messages --------------------------------------------------------------------------
    def drain(self, wait: float = 0.0) -> None:
        try:
            msg = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        while True:
            self._handle(msg)
            try:
                msg = self.queue.get_nowait()
            except (queue_mod.Empty, EOFError, OSError):
                return

    def _handle(self, msg) -> None:
        kind = msg[0]
        if kind == "run":
            self.run_id = msg[1]
        elif kind == "done":
            self.done = msg
        elif kind == "error":
            _, rank, message, code, peer = msg
            self.reported.add(rank)
            self.failures.append(Failure(rank, _one_line(message), code, peer or self.stopping))
        elif kind == "say" and self.console is not None:
            self.console.print(msg[1])
        elif kind == "progress" and self.console is not None:
            self._show(msg[1])

    def _show(self, p: dict) -> None:
        from .monitor import LiveMonitor, TrainState

        if self.state is None:
            self.state = TrainState(run_id=p["run_id"], name=p["name"], method=p["method"],
                                    total_steps=p["total_steps"], device=p["device"], resumed_from=p["resumed_from"])
            # memory comes from rank 0; this process never samples its own
            self.monitor = LiveMonitor(self.console, every=self.log_every, sampler=lambda _device: self._memory)
        st = self.state
        if p["loss"] is not None and p["step"] != st.step:
            st.record_step(step=p["step"], loss=p["loss"], lr=p["lr"], epoch=p["epoch"])
        st.val_loss, st.status, st.last_checkpoint, st.note = p["val_loss"], p["status"], p["last_checkpoint"], p["note"]
        if p["memory"] is not None and p["memory"] is not self._memory:
            self._memory = st.memory = p["memory"]
        self.monitor.update(st, final=p["final"])

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()

    # -- processes -------------------------------------------------------------------------
    def alive(self) -> list:
        return [p for p in self.procs if p.exitcode is None]

    def _note_crashes(self) -> None:
        for rank, p in enumerate(self.procs):
            if p.exitcode not in (None, 0) and rank not in self.reported:
                self.reported.add(rank)
                if not self.stopping:  # after a stop, a non-zero exit is the stop's doing
                    self.failures.append(Failure(rank, "", p.exitcode, crashed=True))

    def watch(self) -> None:
        """Until every process has ended; a failure stops the rest after SETTLE_S."""
        failed_at = None
        while self.alive():
            self.drain(POLL_S)
            self.drain()  # reports come before a process exits; read them before looking at exit codes
            self._note_crashes()
            if self.failures and failed_at is None:
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at >= SETTLE_S:
                self.stop(signal.SIGTERM)
                break
        self.drain()
        self._note_crashes()

    def stop(self, sig=signal.SIGTERM, grace: float = STOP_GRACE_S) -> None:
        """Signal the processes still running, wait up to `grace`, then kill what is left."""
        self.stopping = True
        for p in self.alive():
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            self.drain(POLL_S)
        for p in self.alive():
            p.kill()
        for p in self.procs:
            p.join(timeout=5)
        self.drain()


def train_parallel(cfg: TrainConfig, *, registry: Registry | None = None, console=None, resume: str | None = None):
    """Run `train` in cfg.processes processes and return rank 0's outcome."""
    import torch.multiprocessing as mp

    from .plan import make_plan
    from .trainer import Outcome, TrainingInterrupted, _TermAsInterrupt

    reg = registry or Registry()
    if resume:
        from .trainer import _resume_config

        cfg, _ = _resume_config(reg, resume, cfg)
    plan = make_plan(cfg, reg)  # fail fast in this process, before spawning anything
    world = cfg.processes
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    if console is not None:
        console.print(f"[dim]training in {world} processes ({plan.samples_per_step} samples per step)…[/]")
    procs = [ctx.Process(target=_worker, args=(r, world, port, str(reg.home), cfg.to_dict(), resume, queue))
             for r in range(world)]
    sup = _Supervisor(procs, queue, world, console, cfg.log_every)
    interrupted = False
    try:
        with _TermAsInterrupt():  # a SIGTERM to this process stops the run as Ctrl-C does
            for p in procs:
                p.start()
            try:
                sup.watch()
            except KeyboardInterrupt:
                interrupted = True
                # a terminal's Ctrl-C reached the processes too; give them time to save, then stop them
                deadline = time.monotonic() + 3.0
                while sup.alive() and time.monotonic() < deadline:
                    sup.drain(POLL_S)
                sup.stop(signal.SIGTERM, grace=INTERRUPT_GRACE_S)
    finally:
        for p in sup.alive():
            p.kill()
        sup.close()
    run_id = sup.run_id or resume
    if interrupted:
        mine = [f for f in sup.failures if f.rank == 0 and f.exit_code == 130]
        raise TrainingInterrupted(mine[0].message if mine else "interrupted; "
                                  + (f"continue with `styler train --resume {run_id}`" if run_id else "nothing was saved"))
    if sup.failures and sup.done is not None and run_id:
        # rank 0 finished and registered the adapter; a process that failed after that changed nothing
        cause = root_cause(sup.failures)
        if console is not None:
            from rich.markup import escape

            console.print(f"[dim]{escape(failure_message(cause, world).split(';')[0])} after the run completed[/]")
    elif sup.failures:
        cause = root_cause(sup.failures)
        message = failure_message(cause, world)
        if run_id and not (cause.rank == 0 and not cause.peer and not cause.crashed):
            _mark_failed(reg, run_id, message)  # rank 0 may have been stopped before it could
        raise StylerError(message, exit_code=cause.exit_code if not cause.crashed else 1)
    if sup.done is None or not run_id:
        codes = [p.exitcode for p in procs]
        raise StylerError(f"data-parallel training ended without a result (exit codes {codes})")
    run = reg.get(Run, run_id)
    adapter = reg.get(Adapter, sup.done[1]) if sup.done[1] else None
    return Outcome(run, adapter, plan, sup.done[2])


def _mark_failed(reg: Registry, run_id: str, message: str) -> None:
    try:
        if reg.get(Run, run_id).status != "completed":
            reg.update(Run, run_id, status="failed", error=message, finished_at=now_iso())
    except Exception:  # the registry error, if any, is not the one to report
        pass
