"""Following a run's metrics.jsonl while a training in another process appends to it.

`MetricsTail.poll()` reads only the bytes added since the last call (a half-written last line
waits for its newline); `RunStats.from_rows` is a pure summary of the rows seen so far.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

HISTORY = 120  # losses kept for the sparkline
RATE_ROWS = 10  # it/s is measured over the last few steps


class MetricsTail:
    """Incremental reader of one metrics.jsonl; thread-safe (polls come from thread workers)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0
        self.rows: list[dict] = []
        self.bad_lines = 0
        self._partial = b""
        self._identity: tuple[int, int] | None = None  # (device, inode): a replaced file starts over
        self._lock = threading.Lock()

    def poll(self) -> "RunStats":
        """Read what was appended since the last poll; returns the stats over every row so far."""
        with self._lock:
            self._read_new()
            return RunStats.from_rows(self.rows, bad_lines=self.bad_lines)

    def _read_new(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        identity = (st.st_dev, st.st_ino)
        if identity != self._identity or st.st_size < self.offset:
            self.offset, self._partial, self.rows, self.bad_lines = 0, b"", [], 0
            self._identity = identity
        if st.st_size == self.offset:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(st.st_size - self.offset)
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                self.rows.append(row)
            else:
                self.bad_lines += 1


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _rate(rows: list[dict]) -> float | None:
    """Steps per second over the last few rows: from step_s when the trainer logs it, else from
    the wall-clock timestamps."""
    recent = rows[-RATE_ROWS:]
    times = [t for t in (_finite(r.get("step_s")) for r in recent) if t is not None and t > 0]
    if times:
        return len(times) / sum(times)
    stamped = [r for r in recent if _finite(r.get("time")) is not None]
    if len(stamped) >= 2:
        dt = float(stamped[-1]["time"]) - float(stamped[0]["time"])
        ds = float(stamped[-1]["step"]) - float(stamped[0]["step"])
        if dt > 0 and ds > 0:
            return ds / dt
    return None


def _memory(row: dict) -> str:
    """A memory reading if the row carries one (`memory` dict, or `mem_*` / `*_bytes` numbers)."""
    found = {}
    mem = row.get("memory")
    if isinstance(mem, dict):
        found.update(mem)
    elif mem is not None:
        found["memory"] = mem
    found.update({k: v for k, v in row.items() if k.startswith("mem_") or k.endswith("_mem")})
    parts = []
    for key, value in found.items():
        v = _finite(value)
        if v is None:
            continue
        parts.append(f"{key} {v / 2**30:.2f} GiB" if v >= 2**20 else f"{key} {v:g}")
    return " · ".join(parts)


@dataclass(frozen=True)
class RunStats:
    rows_seen: int = 0
    step: int | None = None
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    val_loss: float | None = None
    it_per_s: float | None = None
    memory: str = ""
    losses: tuple[float, ...] = field(default_factory=tuple)
    bad_lines: int = 0

    @classmethod
    def from_rows(cls, rows: list[dict], *, bad_lines: int = 0) -> "RunStats":
        if not rows:
            return cls(bad_lines=bad_lines)
        last = rows[-1]
        val = next((v for v in (_finite(r.get("val_loss")) for r in reversed(rows)) if v is not None), None)
        losses = tuple(v for v in (_finite(r.get("loss")) for r in rows[-HISTORY:]) if v is not None)
        epoch = last.get("epoch")
        return cls(rows_seen=len(rows), step=int(last["step"]), epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
                   loss=_finite(last.get("loss")), lr=_finite(last.get("lr")), val_loss=val, it_per_s=_rate(rows),
                   memory=_memory(last), losses=losses, bad_lines=bad_lines)
