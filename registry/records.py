"""Frozen record types, one per table. Every record has a ULID `id` and a `created_at`.

Links between records are ids: an adapter names its run and dataset version, an output its base
and the adapters (with weights) that made it, a score its subject and the outputs it measured.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .ids import new_id, now_iso


@dataclass(frozen=True)
class Record:
    TABLE: ClassVar[str] = ""
    VERSIONED: ClassVar[bool] = False

    id: str = field(default_factory=new_id, kw_only=True)
    created_at: str = field(default_factory=now_iso, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        return self.id


@dataclass(frozen=True)
class _Versioned(Record):
    VERSIONED: ClassVar[bool] = True

    name: str = ""
    version: int = 1

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Dataset(_Versioned):
    """A managed, versioned copy of a dataset under `datasets/<ns>/<name>/<version>/`."""

    TABLE: ClassVar[str] = "datasets"

    path: str = ""  # relative to the home
    content_hash: str = ""
    n_images: int = 0
    n_train: int = 0
    n_val: int = 0
    n_dropped: int = 0
    source: str = ""
    caption_from: str = ""
    prefix: str = ""
    trigger: str = ""
    options: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter(_Versioned):
    """A trained or imported adapter stored as a blob."""

    TABLE: ClassVar[str] = "adapters"

    method: str = "lora"  # lora | adalora | dreambooth | textual-inversion | imported | merged | loha | lokr | lycoris
    blob: str = ""  # sha256 of the .safetensors file
    base: dict = field(default_factory=dict)  # {"name": ..., "hash": ...}
    run_id: str | None = None
    dataset_id: str | None = None
    rank: int | None = None
    alpha: float | None = None
    targets: list = field(default_factory=list)
    trigger: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run(Record):
    """A training run; its files live in `runs/<id>/`."""

    TABLE: ClassVar[str] = "runs"

    method: str = "lora"
    dataset_id: str | None = None
    base: dict = field(default_factory=dict)
    status: str = "queued"  # queued | running | completed | failed | interrupted
    pid: int | None = None
    config: dict = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    adapter_id: str | None = None
    error: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    host: str = ""  # where the process runs (a shared home may be used from several machines)
    pid_started: str = ""  # the process's start time (process_started), so a reused pid is not this run
    device: str = ""  # where rank 0 trained ("cuda:0", "cpu") and the frozen weights' dtype ("bf16", …)
    dtype: str = ""
    results: dict = field(default_factory=dict)  # what a method reports beyond the adapter (AdaLoRA's final ranks)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """A `running` record whose process is gone reads as `interrupted`. Every reader —
        `styler registry ls/show`, the TUI, `styler train --resume` — gets records through here;
        reads leave the stored record as it is, listings store it (maintenance.record_gone_runs)."""
        run = cls.as_stored(data)
        if run.gone():
            return dataclasses.replace(run, status="interrupted", error=run.error or run.gone_error())
        return run

    @classmethod
    def as_stored(cls, data: dict[str, Any]) -> "Run":
        """The record as stored, `running` even when its process is gone."""
        return super().from_dict(data)

    def gone(self) -> bool:
        """Recorded as running, but its process is certainly gone (process_gone)."""
        return self.status == "running" and bool(self.pid) and process_gone(self.pid, self.host, self.pid_started)

    def gone_error(self) -> str:
        return (f"its process (pid {self.pid}) ended without stopping the run (killed or crashed); continue "
                f"with `styler train --resume {self.id}`")


@dataclass(frozen=True)
class Output(Record):
    """A generated image (stored as a blob) with everything needed to make it again."""

    TABLE: ClassVar[str] = "outputs"

    blob: str = ""
    kind: str = "txt2img"  # txt2img | img2img | inpaint | validation | baseline
    prompt: str = ""
    negative: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str = ""
    base: dict = field(default_factory=dict)
    adapters: list = field(default_factory=list)  # [{"id", "name", "weight", "te_weight"}]
    run_id: str | None = None
    content_blob: str | None = None
    params: dict = field(default_factory=dict)
    device: str = ""  # where it was rendered ("cuda:0", "cpu", …) and in what dtype ("bf16", …)
    dtype: str = ""


@dataclass(frozen=True)
class Score(Record):
    """One metric value for a subject (adapter, mix, baseline) with its protocol."""

    TABLE: ClassVar[str] = "scores"

    metric: str = ""
    value: float | None = None
    subject: dict = field(default_factory=dict)  # {"kind": "adapter"|"mix"|"baseline", ...}
    output_ids: list = field(default_factory=list)
    protocol: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Job(Record):
    """A queued unit of work for `styler worker`."""

    TABLE: ClassVar[str] = "jobs"

    kind: str = ""
    payload: dict = field(default_factory=dict)
    status: str = "queued"  # queued | running | done | failed | cancelled
    cancel_requested: bool = False  # set while running; the worker stops at its next check
    worker: str | None = None
    claimed_at: str | None = None
    heartbeat_at: str | None = None
    attempts: int = 0
    error: str = ""
    result: dict = field(default_factory=dict)
    after: list = field(default_factory=list)  # ids of jobs that must end (done, failed, cancelled) first


def process_started(pid: int) -> str:
    """A token for when process `pid` started ("" when it cannot be told): on Linux the boot id
    and the start time in clock ticks from /proc (a clock change does not move them), elsewhere
    psutil's create time when psutil is installed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        return f"linux:{boot}:{int(fields[19])}"
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil

        return f"psutil:{psutil.Process(pid).create_time()!r}"
    except Exception:  # not installed, no such process, no access
        return ""


def _exists(pid: int) -> bool | None:
    """Whether a process `pid` exists here (a zombie does not count); None when it cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    if os.name == "posix":
        try:
            os.kill(pid, 0)  # signal 0: nothing is sent (on Windows os.kill would end the process)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return None
        return True
    try:
        import psutil

        return psutil.pid_exists(pid)
    except Exception:
        return None


def process_gone(pid: int, host: str = "", started: str = "") -> bool:
    """True only when it is certain that the process recorded as (host, pid, started) no longer
    runs: it ran on this machine (records without a host are taken to be local) and pid is free or
    now belongs to a process started at another time."""
    if host and host != socket.gethostname():
        return False  # another machine's process: nothing here can tell
    alive = _exists(pid)
    if alive is None:
        return False
    if not alive:
        return True
    now = process_started(pid) if started else ""
    return bool(now) and now != started


RECORD_TYPES: dict[str, type[Record]] = {
    cls.TABLE: cls for cls in (Dataset, Adapter, Run, Output, Score, Job)
}
TABLES = tuple(RECORD_TYPES)
