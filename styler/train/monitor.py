"""The live training display: a state object, a pure render of it, and a monitor that shows it.

`render(state)` reads nothing but `state` (no clock, no I/O), so it is tested with a recording
Console; `LiveMonitor` redraws it under a TTY and prints `plain_line(state)` otherwise.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATUSES = ("running", "completed", "failed", "interrupted")
STATUS_STYLES = {"running": "blue", "completed": "green", "failed": "red", "interrupted": "yellow"}
EMA_ALPHA = 0.1  # weight of the newest loss: smooths over roughly the last 10-20 steps
HISTORY_LEN = 200  # losses kept for the sparkline
RATE_WINDOW_S = 30.0  # it/s is measured over the steps of the last 30 seconds
SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


@dataclass(frozen=True)
class MemoryStats:
    """One memory reading; a field is None when that number could not be read."""

    kind: str  # "cuda" or "cpu" (anything that is not CUDA reports host memory)
    device: str = ""
    allocated: int | None = None  # CUDA bytes held by tensors
    reserved: int | None = None  # CUDA bytes held by the caching allocator
    peak: int | None = None  # CUDA max allocated since start (or the last reset)
    total: int | None = None  # CUDA device memory
    gpu_util: float | None = None  # percent, from NVML when pynvml is importable
    temperature: float | None = None  # degrees C, from NVML
    rss: int | None = None  # this process's resident memory, bytes
    system_used: int | None = None  # host MemTotal - MemAvailable, bytes
    system_total: int | None = None


@dataclass(frozen=True)
class RankBudget:
    """An adaptive-rank method's budget after a step (AdaLoRA): the schedule's total rank over all
    adapted layers, where it ends, where it started, and the ranks the masks keep now."""

    budget: int
    target: int
    initial: int
    allocated: int
    layers: int
    phase: str  # "warm-up" | "pruning" | "fixed"


@dataclass
class TrainState:
    """What the display shows; the trainer owns it and calls `record_step` once per optimizer step.

    Create it when the loop starts (or pass `started`): the first step's rate is measured from it.
    """

    run_id: str
    name: str
    method: str
    total_steps: int
    device: str = "cpu"
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    loss_ema: float | None = None
    lr: float | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LEN), repr=False)
    started: float = field(default_factory=time.monotonic)
    updated: float | None = None  # clock of the last record_step; elapsed is measured to it
    status: str = "running"
    val_loss: float | None = None
    last_checkpoint: int | None = None
    note: str = ""
    memory: MemoryStats | None = None
    resumed_from: int = 0  # steps done before this process started; excluded from it/s and ETA
    ranks: RankBudget | None = None  # AdaLoRA's rank budget, shown as its own row
    _rate_samples: deque = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        self.step = max(self.step, self.resumed_from)
        # the run's start is the first rate sample, so it/s is known after one step
        self._rate_samples.append((self.started, self.step))

    def record_step(
        self, step: int, loss: float, lr: float | None, epoch: int | None = None, now: float | None = None
    ) -> None:
        """Record a finished step: last loss, EMA, history, and the it/s window."""
        now = time.monotonic() if now is None else now
        self.step, self.lr, self.updated = step, lr, now
        if epoch is not None:
            self.epoch = epoch
        self.loss = float(loss)
        # a NaN/inf loss is shown as is but kept out of the EMA and the sparkline
        if math.isfinite(self.loss):
            self.history.append(self.loss)
            prev = self.loss_ema
            self.loss_ema = self.loss if prev is None else prev + EMA_ALPHA * (self.loss - prev)
        samples = self._rate_samples
        samples.append((now, step))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()

    @property
    def it_per_s(self) -> float | None:
        """Steps per second over the recent window; None until a step has taken measurable time."""
        (t0, s0), (t1, s1) = self._rate_samples[0], self._rate_samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None while the rate is unknown."""
        rate = self.it_per_s
        return None if rate is None else max(self.total_steps - self.step, 0) / rate

    @property
    def elapsed_s(self) -> float:
        """Seconds from the start of this process's run to the last recorded step."""
        return max((self.updated if self.updated is not None else self.started) - self.started, 0.0)

    @property
    def fraction(self) -> float:
        return min(self.step / self.total_steps, 1.0) if self.total_steps > 0 else 0.0


def _proc_kib(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    """Read `Key:   123 kB` lines from a /proc file; missing file or keys give a shorter dict."""
    found: dict[str, int] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    found[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def _process_rss() -> int | None:
    rss = _proc_kib("/proc/self/status", ("VmRSS",)).get("VmRSS")
    if rss is not None:
        return rss
    try:  # no /proc (macOS): peak RSS is the best cheap stand-in
        import resource
        import sys

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere
    except Exception:
        return None


def _system_memory() -> tuple[int | None, int | None]:
    info = _proc_kib("/proc/meminfo", ("MemTotal", "MemAvailable"))
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    return (total - available if total is not None and available is not None else None), total


_nvml_handles: dict[str, object] = {}  # device UUID -> NVML handle, or None once it failed


def _nvml_readings(props) -> tuple[float | None, float | None]:
    """GPU utilisation and temperature from NVML, or (None, None) without pynvml or on any error."""
    uuid = str(getattr(props, "uuid", ""))
    try:
        import pynvml

        if uuid not in _nvml_handles:
            _nvml_handles[uuid] = None  # a failure below is remembered: no nvmlInit on every sample
            pynvml.nvmlInit()
            # torch numbers devices after CUDA_VISIBLE_DEVICES and NVML does not: match by UUID
            _nvml_handles[uuid] = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        handle = _nvml_handles[uuid]
        if handle is None:
            return None, None
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        return float(util), float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    except Exception:
        return None, None


def _try(fn: Callable, *args):  # for sample_memory: a missing number is None, never an error
    try:
        return fn(*args)
    except Exception:
        return None


def sample_memory(device: str) -> MemoryStats:
    """Read memory use for `device` ("cpu", "cuda", "cuda:1", ...); never raises, never imports torch for cpu."""
    rss = _process_rss()
    if not device.startswith("cuda"):
        used, total = _system_memory()
        return MemoryStats(kind="cpu", device=device, rss=rss, system_used=used, system_total=total)
    try:
        import torch

        index = int(device.partition(":")[2] or torch.cuda.current_device())
    except Exception:
        return MemoryStats(kind="cuda", device=device, rss=rss)
    cuda = torch.cuda
    props = _try(cuda.get_device_properties, index)
    util, temp = _nvml_readings(props) if props is not None else (None, None)
    return MemoryStats(
        kind="cuda", device=device, rss=rss, gpu_util=util, temperature=temp,
        allocated=_try(cuda.memory_allocated, index), reserved=_try(cuda.memory_reserved, index),
        peak=_try(cuda.max_memory_allocated, index), total=getattr(props, "total_memory", None),
    )  # fmt: skip


def format_duration(seconds: float | None) -> str:
    """H:MM:SS (hours unbounded); "-:--:--" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    total = int(round(max(seconds, 0.0)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def sparkline(values, width: int = SPARK_WIDTH) -> str:
    """The last `width` values as ▁..█, scaled from their min to their max (flat history: ▄)."""
    points = list(values)[-width:]
    if not points:
        return ""
    lo, hi = min(points), max(points)
    if hi - lo <= 0:
        return SPARK_CHARS[3] * len(points)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - lo) / (hi - lo) * top)] for v in points)


def _loss(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(f"{value:.4f}", style="bold" if math.isfinite(value) else "bold red")


def _lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.1e}"


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f}"


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**2:.0f} MiB"


def _rate(state: TrainState) -> str:
    """it/s, or s/it when a step takes more than a second (as tqdm does)."""
    rate = state.it_per_s
    return "- it/s" if rate is None else f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"


def _memory_panel(mem: MemoryStats, style: str) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    if mem.kind == "cuda":
        grid.add_row(
            "gpu",
            f"allocated {_gib(mem.allocated)} · reserved {_gib(mem.reserved)} · "
            f"peak {_gib(mem.peak)} of {_gib(mem.total)} GiB",
        )
        extras = [f"util {mem.gpu_util:.0f}%"] if mem.gpu_util is not None else []
        extras += [f"temp {mem.temperature:.0f}°C"] if mem.temperature is not None else []
        if extras:
            grid.add_row("", " · ".join(extras))
        if mem.rss is not None:
            grid.add_row("host", f"rss {_mib(mem.rss)}")
    else:
        system = f" · system {_gib(mem.system_used)}/{_gib(mem.system_total)} GiB" if mem.system_total else ""
        grid.add_row("cpu", f"rss {_mib(mem.rss)}{system}")
    return Panel(grid, title=Text(f"memory {mem.device or mem.kind}"), title_align="left", border_style=style)


def _ranks(r: RankBudget) -> Text:
    """budget now → target (from the start), what the masks keep, and the phase, with a bar of how
    far the budget has come down."""
    span = r.initial - r.target
    done = 1.0 if span <= 0 else min(max((r.initial - r.budget) / span, 0.0), 1.0)
    width = 10
    filled = round(done * width)
    return Text.assemble(
        f"budget {r.budget} → {r.target} (from {r.initial}, {r.layers} layers)  ",
        ("━" * filled, "magenta"), ("━" * (width - filled), "dim"),
        f"  kept {r.allocated}  {r.phase}",
    )


def render(state: TrainState) -> RenderableType:
    """The whole display as one panel; a pure function of `state`."""
    colour = STATUS_STYLES.get(state.status, "white")
    grid = Table.grid(padding=(0, 2), expand=True)
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(ratio=1)

    bar_row = Table.grid(padding=(0, 2), expand=True)
    bar_row.add_column(ratio=1)
    bar_row.add_column(no_wrap=True, justify="right")
    total = max(state.total_steps, 1)
    bar = ProgressBar(total=total, completed=min(state.step, total), complete_style=colour, finished_style=colour)
    bar_row.add_row(bar, f"{state.step}/{state.total_steps}  {state.fraction:4.0%}")
    grid.add_row("step", bar_row)
    grid.add_row(
        "speed",
        f"{_rate(state)}   elapsed {format_duration(state.elapsed_s)}   "
        f"eta {format_duration(state.eta_s)}   epoch {state.epoch}",
    )
    loss = Text.assemble(_loss(state.loss), "  ema ", _loss(state.loss_ema), f"   lr {_lr(state.lr)}")
    if state.val_loss is not None:
        loss.append("   val ").append_text(_loss(state.val_loss))
    grid.add_row("loss", loss)
    if state.ranks is not None:
        grid.add_row("ranks", _ranks(state.ranks))
    spark = sparkline(state.history)
    if spark:
        recent = list(state.history)[-SPARK_WIDTH:]
        grid.add_row("trend", Text.assemble((spark, colour), f"  {min(recent):.4f} … {max(recent):.4f}"))
    if state.last_checkpoint is not None and f"checkpoint saved at step {state.last_checkpoint}" not in (state.note or ""):
        grid.add_row("saved", f"checkpoint at step {state.last_checkpoint}")  # once: not again beside its note
    if state.note:
        grid.add_row("note", Text(state.note))  # Text, not markup: user text shows literally

    body: RenderableType = grid
    if state.memory is not None:
        body = Group(grid, _memory_panel(state.memory, "dim"))
    title = Text.assemble((state.name, "bold"), " · ", state.method, " · ", (state.run_id, "dim"))
    status = Text(f"● {state.status}", style=colour)
    return Panel(body, title=title, title_align="left", subtitle=status, subtitle_align="right", border_style=colour)


def plain_line(state: TrainState) -> str:
    """One log line for non-TTY output."""
    parts = [] if state.status == "running" else [state.status]
    parts.append(f"step {state.step}/{state.total_steps} ({state.fraction:.0%})")
    if state.loss is not None:
        ema = f" (ema {state.loss_ema:.4f})" if state.loss_ema is not None else ""
        parts.append(f"loss {state.loss:.4f}{ema}")
    if state.val_loss is not None:
        parts.append(f"val {state.val_loss:.4f}")
    if state.lr is not None:
        parts.append(f"lr {_lr(state.lr)}")
    if state.ranks is not None:
        r = state.ranks
        parts.append(f"ranks {r.allocated} (budget {r.budget} → {r.target}, {r.phase})")
    if state.it_per_s is not None:
        parts.append(_rate(state))
    running = state.status == "running"
    parts.append(f"eta {format_duration(state.eta_s)}" if running else f"elapsed {format_duration(state.elapsed_s)}")
    mem = state.memory
    if mem is not None and mem.kind == "cuda" and mem.allocated is not None:
        parts.append(f"gpu {_gib(mem.allocated)}/{_gib(mem.total)} GiB")
    elif mem is not None and mem.rss is not None:
        parts.append(f"rss {_mib(mem.rss)}")
    return " ".join(parts)


ECHO_MARGIN = 2  # columns the live frame leaves free at the right edge, for the terminal's `^C` echo


class _EchoMargin:
    """The live frame, two columns narrower than the terminal. Ctrl-C makes the terminal echo `^C`
    at the cursor, which Live leaves at the end of the frame's last line: on a full-width line that
    echo wraps to a new line, Live's cursor-up count is then one line short, and the final frame was
    drawn one line lower, under the previous frame's top border (a doubled border)."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options):
        yield from console.render(self.inner, options.update(width=max(options.max_width - ECHO_MARGIN, 20)))


def live_frame(state: "TrainState") -> RenderableType:
    """What the Live panel draws: `render(state)` inside the echo margin."""
    return _EchoMargin(render(state))


class LiveMonitor:
    """Shows a TrainState: a Rich Live panel on a terminal, else a plain line every `every` steps.

    Under plain output a changed `note` is printed as its own line, so checkpoint messages reach the log.
    Memory is sampled at most every `sample_every_s`; `sampler` and `clock` are injectable for tests.
    """

    def __init__(self, console: Console, every: int = 10, *, sample_every_s: float = 1.0, sampler=None, clock=None):
        self.console, self.every, self.sample_every_s = console, max(int(every), 1), sample_every_s
        self._sampler, self._clock = sampler or sample_memory, clock or time.monotonic
        self._live: Live | None = None
        self._memory: MemoryStats | None = None  # the last reading we stored or saw
        self._memory_at = -math.inf
        self._printed_step: int | None = None
        self._printed_note = ""
        self._state: TrainState | None = None

    def __enter__(self) -> LiveMonitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        state = self._state
        if exc_type is not None and state is not None and state.status == "running" and self._live is not None:
            # the last frame must not say "running" (a step behind) once the run has stopped
            interrupted = issubclass(exc_type, KeyboardInterrupt) or exc_type.__name__ == "_Interrupted"
            state.status = "interrupted" if interrupted else "failed"
            state.step = int(getattr(exc, "step", state.step) or state.step)
            state.note = f"stopped at step {state.step}" if interrupted else f"stopped: {exc_type.__name__}"
            self.update(state, final=True)
        self.close()
        return False  # never swallow the trainer's exception, KeyboardInterrupt included

    def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()  # transient=False: the last frame stays on screen

    def update(self, state: TrainState, final: bool = False) -> None:
        """Show `state`: redraw the live panel, or print a line when due (every N steps, and final)."""
        self._state = state
        terminal = self.console.is_terminal
        due = final or (state.step % self.every == 0 and state.step != self._printed_step)
        if terminal or due:
            self._refresh_memory(state, force=final)
        if terminal:
            frame = live_frame(state)
            if self._live is None:
                self._live = Live(frame, console=self.console, refresh_per_second=4, transient=False)
                self._live.start(refresh=True)  # the panel shows at once, not at the first tick
            else:
                self._live.update(frame, refresh=final)
            return
        if state.note and state.note != self._printed_note:
            self._printed_note = state.note
            self.console.print(state.note, markup=False, highlight=False, soft_wrap=True)
        if due:
            self._printed_step = state.step
            self.console.print(plain_line(state), markup=False, highlight=False, soft_wrap=True)

    def _refresh_memory(self, state: TrainState, force: bool) -> None:
        now = self._clock()
        if state.memory is not None and state.memory is not self._memory:
            # the caller sampled it just now: take it as fresh
            self._memory, self._memory_at = state.memory, now
            return
        if force or state.memory is None or now - self._memory_at >= self.sample_every_s:
            state.memory = self._memory = self._sampler(state.device)
            self._memory_at = now
