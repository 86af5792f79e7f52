"""The training display: state math, the pure render, plain lines, the monitor, memory sampling."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
from rich.console import Console

from styler.train import monitor
from styler.train.monitor import (
    EMA_ALPHA,
    LiveMonitor,
    MemoryStats,
    TrainState,
    format_duration,
    plain_line,
    render,
    sample_memory,
    sparkline,
)

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
CPU_MEM = MemoryStats(kind="cpu", device="cpu", rss=812 * 1024**2, system_used=10 * GIB, system_total=32 * GIB)
CUDA_MEM = MemoryStats(
    kind="cuda", device="cuda:0", allocated=12 * GIB, reserved=14 * GIB, peak=13 * GIB, total=80 * GIB,
    gpu_util=87.0, temperature=65.0, rss=3 * GIB,
)  # fmt: skip


def make_state(steps: int = 20, total: int = 30, dt: float = 0.5, **kw) -> TrainState:
    """A state that ran `steps` steps, `dt` seconds apart, with a falling loss."""
    state = TrainState(run_id="01HXYZRUN", name="calligraphy/mifu", method="lora", total_steps=total, started=100.0, **kw)
    for i in range(1, steps + 1):
        state.record_step(step=i, loss=1.0 / i, lr=1e-4, epoch=i // 10, now=100.0 + i * dt)
    return state


def text_of(renderable, width: int = 100) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# --- state math ---------------------------------------------------------------------------------


def test_ema_follows_the_documented_alpha():
    state = TrainState(run_id="r", name="n", method="lora", total_steps=10, started=0.0)
    state.record_step(step=1, loss=1.0, lr=1e-4, now=1.0)
    assert state.loss_ema == 1.0  # the first loss seeds the average
    state.record_step(step=2, loss=0.0, lr=1e-4, now=2.0)
    assert state.loss_ema == pytest.approx(1.0 - EMA_ALPHA)
    assert state.loss == 0.0 and list(state.history) == [1.0, 0.0]


def test_nan_loss_is_shown_but_kept_out_of_ema_and_history():
    state = make_state(steps=3)
    ema = state.loss_ema
    state.record_step(step=4, loss=float("nan"), lr=1e-4, now=102.0)
    assert math.isnan(state.loss) and state.loss_ema == ema and len(state.history) == 3
    assert "nan" in text_of(render(state))


def test_history_is_bounded():
    state = make_state(steps=250, total=300)
    assert len(state.history) == monitor.HISTORY_LEN


def test_rate_eta_and_elapsed_from_injected_clock():
    state = TrainState(run_id="r", name="n", method="lora", total_steps=30, started=100.0)
    assert state.it_per_s is None and state.eta_s is None and state.elapsed_s == 0.0
    for i in range(1, 21):
        state.record_step(step=i, loss=0.5, lr=1e-4, now=100.0 + i * 0.4)
    assert state.it_per_s == pytest.approx(2.5)
    assert state.eta_s == pytest.approx(10 / 2.5)
    assert state.elapsed_s == pytest.approx(8.0)


def test_rate_uses_only_the_recent_window():
    state = TrainState(run_id="r", name="n", method="lora", total_steps=1000, started=0.0)
    state.record_step(step=1, loss=0.5, lr=None, now=100.0)  # a slow first step (model warm-up)
    for i in range(2, 200):
        state.record_step(step=i, loss=0.5, lr=None, now=100.0 + (i - 1) * 0.5)
    assert state.it_per_s == pytest.approx(2.0, rel=0.05)


def test_resume_does_not_skew_rate_or_eta():
    state = TrainState(run_id="r", name="n", method="lora", total_steps=100, started=50.0, resumed_from=80)
    assert state.step == 80 and state.it_per_s is None
    for i in range(81, 91):
        state.record_step(step=i, loss=0.5, lr=1e-4, now=50.0 + (i - 80) * 1.0)
    assert state.it_per_s == pytest.approx(1.0)
    assert state.eta_s == pytest.approx(10.0)
    assert "90/100" in text_of(render(state))


def test_format_duration():
    assert format_duration(4.4) == "0:00:04"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(30 * 3600) == "30:00:00"
    assert format_duration(None) == "-:--:--"


# --- sparkline ----------------------------------------------------------------------------------


def test_sparkline_scales_min_to_max():
    rising = sparkline([1, 2, 3, 4, 5, 6, 7, 8])
    assert rising == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 1.0])[-1] == "▁"
    assert sparkline(range(100))[-1] == "█" and len(sparkline(range(100))) == monitor.SPARK_WIDTH


def test_sparkline_flat_and_empty():
    assert sparkline([0.3] * 5) == "▄" * 5
    assert sparkline([]) == ""


# --- render -------------------------------------------------------------------------------------


def test_render_shows_progress_speed_and_loss():
    state = make_state(steps=20, total=30, dt=0.4)
    state.memory = CPU_MEM
    out = text_of(render(state))
    assert "calligraphy/mifu" in out and "lora" in out and "01HXYZRUN" in out
    assert "20/30" in out and "67%" in out
    assert "2.50 it/s" in out and "eta 0:00:04" in out and "elapsed 0:00:08" in out
    assert "0.0500" in out  # last loss, 1/20
    assert f"{state.loss_ema:.4f}" in out
    assert "1.0e-04" in out and "epoch 2" in out
    assert "█" in out and "▁" in out  # falling loss: the sparkline spans the full range
    assert "rss 812 MiB" in out and "system 10.0/32.0 GiB" in out
    assert "running" in out


def test_render_cuda_memory_panel():
    state = make_state()
    state.memory = CUDA_MEM
    out = text_of(render(state))
    assert "allocated 12.0" in out and "reserved 14.0" in out and "peak 13.0 of 80.0 GiB" in out
    assert "util 87%" in out and "temp 65°C" in out
    assert "memory cuda:0" in out


def test_render_cuda_without_nvml_leaves_util_out():
    state = make_state()
    state.memory = MemoryStats(kind="cuda", device="cuda:0", allocated=GIB, reserved=GIB, peak=GIB, total=8 * GIB)
    out = text_of(render(state))
    assert "peak 1.0 of 8.0 GiB" in out and "util" not in out and "temp" not in out


def test_render_validation_checkpoint_and_note():
    state = make_state()
    state.val_loss, state.last_checkpoint, state.note = 0.1234, 20, "checkpoint saved at step 20"
    out = text_of(render(state))
    assert "val 0.1234" in out and out.count("checkpoint") == 1 and "checkpoint saved at step 20" in out
    state.note = "saving the adapter"  # the checkpoint line stays once the note moves on
    assert text_of(render(state)).count("checkpoint at step 20") == 1


def test_the_last_frame_after_an_interrupt_says_interrupted_at_the_step_it_stopped():
    import io

    from rich.console import Console

    class _Interrupted(Exception):  # as the trainer raises it: the step it stopped at
        def __init__(self, step):
            self.step = step

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    state = make_state()
    state.step = 7
    with pytest.raises(_Interrupted):
        with LiveMonitor(console) as mon:
            mon.update(state)
            raise _Interrupted(8)
    assert state.status == "interrupted" and state.step == 8
    text = buf.getvalue()
    assert "stopped at step 8" in text and "8/30" in text
    assert text.rindex("● interrupted") > text.rfind("● running")  # the frame left on screen


def test_render_before_any_step():
    state = TrainState(run_id="r", name="n", method="textual-inversion", total_steps=30, started=0.0)
    out = text_of(render(state))
    assert "0/30" in out and "- it/s" in out and "eta -:--:--" in out


@pytest.mark.parametrize(
    "status,colour", [("running", "blue"), ("completed", "green"), ("failed", "red"), ("interrupted", "yellow")]
)
def test_status_colour_and_label(status, colour):
    state = make_state(status=status)
    panel = render(state)
    assert panel.border_style == colour
    assert panel.subtitle.plain == f"● {status}" and str(panel.subtitle.style) == colour
    assert status in text_of(panel)


def test_user_text_shows_literally():
    state = make_state()
    state.name, state.note = "[bold]x[/bold]", "saved [red]y[/red] ok"
    out = text_of(render(state))
    assert "[bold]x[/bold]" in out and "saved [red]y[/red] ok" in out


def test_render_reads_no_clock(monkeypatch):
    state = make_state()

    def no_clock():
        raise AssertionError("render read the clock")

    monkeypatch.setattr(monitor.time, "monotonic", no_clock)
    monkeypatch.setattr(monitor.time, "time", no_clock)
    assert text_of(render(state)) == text_of(render(state))


# --- plain_line ---------------------------------------------------------------------------------


def test_plain_line():
    state = make_state(steps=20, total=30, dt=0.4)
    state.memory = CPU_MEM
    line = plain_line(state)
    assert line.startswith("step 20/30 (67%) loss 0.0500 (ema ")
    assert "lr 1.0e-04" in line and "2.50 it/s" in line and "eta 0:00:04" in line and line.endswith("rss 812 MiB")
    assert "\n" not in line


def test_plain_line_cuda_finished_and_slow():
    state = make_state(steps=30, total=30, dt=4.0, status="completed")
    state.memory = CUDA_MEM
    line = plain_line(state)
    assert line.startswith("completed step 30/30 (100%)")
    assert "4.00 s/it" in line and "elapsed 0:02:00" in line and line.endswith("gpu 12.0/80.0 GiB")


# --- LiveMonitor --------------------------------------------------------------------------------


class FakeSampler:
    def __init__(self):
        self.calls = 0

    def __call__(self, device: str) -> MemoryStats:
        self.calls += 1
        return CPU_MEM


def run_loop(mon: LiveMonitor, state: TrainState, steps: int, clock: list[float]) -> None:
    for i in range(1, steps + 1):
        clock[0] += 0.1
        state.record_step(step=i, loss=1.0 / i, lr=1e-4, now=clock[0])
        mon.update(state)
    state.status = "completed"
    mon.update(state, final=True)


def test_plain_mode_prints_every_n_steps_and_final():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    state = TrainState(run_id="r", name="n", method="lora", total_steps=25, started=0.0)
    clock = [0.0]
    with LiveMonitor(console=console, every=10, sampler=FakeSampler(), clock=lambda: clock[0]) as mon:
        run_loop(mon, state, 25, clock)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["step 10/25", "step 20/25", "completed step 25/25"]
    assert all("rss 812 MiB" in line for line in lines)  # long lines are not wrapped at 80 columns


def test_plain_mode_prints_a_changed_note_once():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    state = TrainState(run_id="r", name="n", method="lora", total_steps=4, started=0.0)
    with LiveMonitor(console=console, every=100, sampler=FakeSampler()) as mon:
        for i in range(1, 4):
            state.record_step(step=i, loss=0.5, lr=None, now=float(i))
            state.note = "checkpoint saved at step 2 [ok]" if i >= 2 else ""
            mon.update(state)
    assert out.getvalue() == "checkpoint saved at step 2 [ok]\n"


def test_terminal_mode_shows_the_final_frame():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    state = TrainState(run_id="r", name="calligraphy/mifu", method="lora", total_steps=30, started=0.0)
    clock = [0.0]
    with LiveMonitor(console=console, every=10, sampler=FakeSampler(), clock=lambda: clock[0]) as mon:
        run_loop(mon, state, 30, clock)
    text = out.getvalue()
    assert "30/30" in text and "completed" in text and "calligraphy/mifu" in text
    assert mon._live is None


def test_terminal_mode_stops_live_on_interrupt():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    state = TrainState(run_id="r", name="n", method="lora", total_steps=30, started=0.0)
    with pytest.raises(KeyboardInterrupt):
        with LiveMonitor(console=console, sampler=FakeSampler()) as mon:
            state.record_step(step=1, loss=0.5, lr=None, now=1.0)
            mon.update(state)
            live = mon._live
            assert live is not None and live.is_started
            raise KeyboardInterrupt
    assert not live.is_started and mon._live is None


def test_memory_is_sampled_at_most_once_a_second():
    sampler, clock = FakeSampler(), [0.0]
    console = Console(file=io.StringIO(), force_terminal=True)
    state = TrainState(run_id="r", name="n", method="lora", total_steps=100, started=0.0)
    with LiveMonitor(console=console, sampler=sampler, clock=lambda: clock[0]) as mon:
        for i in range(1, 31):  # 3 seconds at 10 it/s
            clock[0] = i * 0.1
            state.record_step(step=i, loss=0.5, lr=None, now=clock[0])
            mon.update(state)
        assert sampler.calls in (3, 4)
        assert state.memory is CPU_MEM


def test_memory_set_by_the_caller_is_kept():
    sampler, clock = FakeSampler(), [0.0]
    console = Console(file=io.StringIO(), force_terminal=True)
    state = TrainState(run_id="r", name="n", method="lora", total_steps=10, started=0.0)
    with LiveMonitor(console=console, sampler=sampler, clock=lambda: clock[0]) as mon:
        state.memory = CUDA_MEM
        mon.update(state)
        clock[0] = 0.5
        mon.update(state)
        assert sampler.calls == 0 and state.memory is CUDA_MEM
        clock[0] = 1.6
        mon.update(state)
        assert sampler.calls == 1 and state.memory is CPU_MEM


# --- sample_memory ------------------------------------------------------------------------------


def test_sample_memory_cpu():
    mem = sample_memory("cpu")
    assert mem.kind == "cpu" and mem.rss and mem.rss > 0
    assert mem.allocated is None and mem.gpu_util is None
    if Path("/proc/meminfo").exists():
        assert mem.system_total and 0 < mem.system_used < mem.system_total


def test_sample_memory_cpu_never_imports_torch():
    code = (
        "import sys; from styler.train.monitor import sample_memory; m = sample_memory('cpu'); "
        "print(m.rss > 0, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "False"]


def test_sample_memory_cpu_falls_back_to_getrusage(monkeypatch):
    monkeypatch.setattr(monitor, "_proc_kib", lambda path, keys: {})
    mem = sample_memory("cpu")
    assert mem.rss and mem.rss > 0 and mem.system_used is None and mem.system_total is None


def fake_torch(**overrides) -> types.ModuleType:
    props = types.SimpleNamespace(total_memory=80 * GIB, uuid="abc")
    cuda = types.SimpleNamespace(
        current_device=lambda: 0,
        memory_allocated=lambda i: 12 * GIB,
        memory_reserved=lambda i: 14 * GIB,
        max_memory_allocated=lambda i: 13 * GIB,
        get_device_properties=lambda i: props,
    )
    for name, value in overrides.items():
        setattr(cuda, name, value)
    return types.SimpleNamespace(cuda=cuda)


def test_sample_memory_cuda_reads_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    mem = sample_memory("cuda:0")
    assert (mem.kind, mem.allocated, mem.reserved, mem.peak, mem.total) == ("cuda", 12 * GIB, 14 * GIB, 13 * GIB, 80 * GIB)
    assert mem.gpu_util is None and mem.temperature is None and mem.rss > 0


def test_sample_memory_cuda_reads_nvml_by_uuid(monkeypatch):
    seen = []
    nvml = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: seen.append(uuid) or "handle",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetTemperature=lambda h, sensor: 65,
    )
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(monitor, "_nvml_handles", {})
    mem = sample_memory("cuda")
    assert (mem.gpu_util, mem.temperature) == (87.0, 65.0) and seen == ["GPU-abc"]


def test_sample_memory_cuda_never_raises(monkeypatch):
    def broken(i):
        raise RuntimeError("no CUDA")

    monkeypatch.setitem(sys.modules, "torch", fake_torch(memory_allocated=broken, get_device_properties=broken))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    mem = sample_memory("cuda:1")
    assert mem.kind == "cuda" and mem.allocated is None and mem.total is None and mem.reserved == 14 * GIB
    monkeypatch.setitem(sys.modules, "torch", None)  # torch missing altogether
    missing = sample_memory("cuda:0")
    assert missing.kind == "cuda" and missing.allocated is None and missing.total is None


class _Terminal:
    """Just enough of a VT100 to replay what Rich's Live writes: printable cells with autowrap
    (xterm's pending wrap at the last column), CR, LF (as CR LF), cursor up (ESC[nA), erase line (ESC[2K);
    other escape sequences (colours, cursor visibility) are skipped."""

    def __init__(self, width: int, height: int = 60):
        import re

        self.width, self.rows = width, [[" "] * width for _ in range(height)]
        self.row = self.col = 0
        self.pending = False
        self._csi = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")

    def feed(self, data: str) -> None:
        i = 0
        while i < len(data):
            m = self._csi.match(data, i)
            if m:
                arg, cmd = m.groups()
                if cmd == "A":
                    self.row, self.pending = max(self.row - int(arg or 1), 0), False
                elif cmd == "K" and arg == "2":
                    self.rows[self.row] = [" "] * self.width
                i = m.end()
                continue
            ch = data[i]
            i += 1
            if ch == "\r":
                self.col, self.pending = 0, False
            elif ch == "\n":  # the tty's output processing (onlcr) makes it CR LF
                self.row, self.col, self.pending = self.row + 1, 0, False
            elif ch >= " ":
                if self.pending:
                    self.row, self.col, self.pending = self.row + 1, 0, False
                self.rows[self.row][self.col] = ch
                if self.col == self.width - 1:
                    self.pending = True
                else:
                    self.col += 1

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]


def _interrupted_screen(width: int, steps: int) -> list[str]:
    """What a terminal `width` columns wide shows after a live panel drew `steps` steps and the
    user pressed Ctrl-C: the tty echoes `^C` where Live left the cursor, then the final frame."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, height=50, color_system=None)
    state = TrainState(run_id="r", name="pixel", method="lora", total_steps=20, started=0.0)
    with pytest.raises(KeyboardInterrupt):
        with LiveMonitor(console=console, sampler=FakeSampler()) as mon:
            for i in range(1, steps + 1):
                state.record_step(step=i, loss=1.0 / i, lr=1e-4, now=float(i))
                mon.update(state)
            out.write("^C")
            raise KeyboardInterrupt
    term = _Terminal(width)
    term.feed(out.getvalue())
    return [line for line in term.lines() if line]


def test_ctrl_c_echo_leaves_one_top_border_and_the_last_frame_says_interrupted():
    """The frame leaves two columns free at the right, so the echo never wraps and the final frame
    overwrites the last one."""
    screen = _interrupted_screen(72, 5)
    assert sum(line.startswith("╭") for line in screen) == 1, "\n".join(screen)
    assert max(len(line) for line in screen) <= 72 - 2
    assert "interrupted" in "\n".join(screen) and "running" not in "\n".join(screen)


def test_the_echo_test_terminal_shows_the_doubled_border_of_a_full_width_frame(monkeypatch):
    """The same replay with the margin removed draws the top border twice: the test above would
    catch the fix going away."""
    monkeypatch.setattr(monitor, "ECHO_MARGIN", 0)
    assert sum(line.startswith("╭") for line in _interrupted_screen(72, 1)) == 2
