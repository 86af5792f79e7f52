"""A run's life in the registry: created running, kept current, ended completed / failed /
interrupted; on success the adapter is stored as a blob and registered with full provenance."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from registry import Adapter, BlobStore, Dataset, Registry, Run, now_iso, parse_name
from registry.records import process_started

from .. import __version__
from .config import TrainConfig


def styler_commit() -> str:
    """The git commit styler runs from, when it runs from a checkout ("" otherwise)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@dataclass
class RunHandle:
    """The run record plus its folder; `update` keeps the record current without writing on
    every step (at most every `interval` seconds unless forced)."""

    registry: Registry
    run: Run
    dir: Path
    interval: float = 2.0
    _last: float = 0.0

    @property
    def id(self) -> str:
        return self.run.id

    def update(self, *, force: bool = False, **changes) -> None:
        """Write `changes` now if forced, else if `interval` has passed since the last unforced
        write (a forced write, e.g. the device after setup, does not hold back the first step's)."""
        now = time.monotonic()
        if not force:
            if now - self._last < self.interval:
                return
            self._last = now
        self.run = self.registry.update(Run, self.run.id, **changes)

    def end(self, status: str, **changes) -> None:
        self.run = self.registry.update(Run, self.run.id, status=status, finished_at=now_iso(), **changes)


def this_process() -> dict:
    """The run record's fields that name the process training it (see Run.from_dict: a run whose
    process is gone reads as interrupted)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_started": process_started(pid)}


def start_run(reg: Registry, cfg: TrainConfig, dataset: Dataset, base_identity: dict, total_steps: int) -> RunHandle:
    run = reg.insert(Run(method=cfg.method, dataset_id=dataset.id, base=base_identity, status="running",
                         config=cfg.to_dict(), total_steps=total_steps, started_at=now_iso(), **this_process()))
    run_dir = reg.home / "runs" / run.id
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    return RunHandle(reg, run, run_dir)


def resume_run(reg: Registry, run_id: str, cfg: TrainConfig, total_steps: int, start_step: int = 0) -> RunHandle:
    """Mark the run running again in this process, continuing after `start_step` (0: from the
    start, for a run that left no checkpoint), with `cfg` as its stored config (the record's and
    config.toml: a resume with --steps extends the run); metrics rows of later steps, from the
    attempt that stopped, are dropped, so metrics.jsonl holds each step once."""
    run_dir = reg.home / "runs" / run_id
    keep_metrics(run_dir / "metrics.jsonl", start_step)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.toml", cfg.to_toml())
    run = reg.update(Run, run_id, status="running", config=cfg.to_dict(), total_steps=total_steps, step=start_step,
                     error="", finished_at=None, **this_process())
    return RunHandle(reg, run, run_dir)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (a reader sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def keep_metrics(path: Path, last_step: int) -> None:
    """Rewrite metrics.jsonl (atomically) with only the rows of steps <= last_step."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
            kept.append(line)
    if len(kept) == len(lines):
        return
    write_atomic(path, "".join(line + "\n" for line in kept))


def adapter_name(cfg: TrainConfig, dataset: Dataset) -> str:
    return parse_name(cfg.name or dataset.name, allow_version=False).full


def provenance(cfg: TrainConfig, dataset: Dataset, base_identity: dict, run: Run, name: str, version: int,
               extra: dict) -> dict[str, str]:
    """What goes into the adapter file's safetensors metadata (kohya keeps its ss_* keys there)."""
    meta = {
        "styler.version": __version__,
        "styler.commit": styler_commit(),
        "styler.adapter": f"{name}@{version}",
        "styler.method": cfg.method,
        "styler.run_id": run.id,
        "styler.dataset": json.dumps({"name": dataset.name, "version": dataset.version, "id": dataset.id,
                                      "content_hash": dataset.content_hash}, ensure_ascii=False),
        "styler.base": json.dumps(base_identity, ensure_ascii=False),
        "styler.config": json.dumps(cfg.to_dict(), ensure_ascii=False),
        "styler.trigger": dataset.trigger,
        # the kohya keys A1111/civitai show
        "ss_output_name": name,
        "ss_base_model_version": "sd_v1",
        "ss_steps": str(extra.get("steps", "")),
        "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
        "ss_learning_rate": str(cfg.lr),
    }
    if cfg.method == "adalora":  # per-layer ranks and alphas: the file's LoRA metadata has each one
        from .adalora import ranks

        init, target = ranks(cfg)
        meta.update({"ss_network_dim": str(target), "ss_network_alpha": str(target), "ss_network_module": "peft.adalora",
                     "ss_network_args": json.dumps({"init_rank": init, "target_rank": target})})
    elif cfg.method != "textual-inversion":
        meta.update({"ss_network_dim": str(cfg.rank), "ss_network_alpha": str(cfg.effective_alpha),
                     "ss_network_module": "peft.lora"})
    return meta


def register_adapter(handle: RunHandle, cfg: TrainConfig, dataset: Dataset, base_identity: dict, method,
                     extra: dict) -> Adapter:
    """Save the adapter into the run folder, store it as a blob, and record it — the record last,
    so a failure leaves the registry without a half-registered adapter. The file is written and
    hashed outside the registry lock (Registry.insert_next_version); if another process takes the
    version meanwhile, the file is written again for the next one (its metadata names the version)."""
    reg = handle.registry
    name = adapter_name(cfg, dataset)
    lora = cfg.method != "textual-inversion"

    def build(version: int) -> Adapter:
        meta = provenance(cfg, dataset, base_identity, handle.run, name, version, extra)
        path = method.save(handle.dir / "adapter.safetensors", meta)
        digest = BlobStore(reg.home).put_file(path)
        return Adapter(
            name=name, version=version, method=cfg.method, blob=digest, base=base_identity, run_id=handle.id,
            dataset_id=dataset.id,
            rank=(cfg.adalora_target_rank or cfg.rank) if lora else None,  # adalora: the average it pruned to
            alpha=float(getattr(method, "lora_alpha", cfg.effective_alpha)) if lora else None,
            targets=cfg.unet_target_modules() + (["text_encoder"] if cfg.text_encoder else []) if lora else [],
            trigger=dataset.trigger if lora else method.token,
            metadata={"styler_version": __version__, "commit": meta["styler.commit"], **method.summary(), **extra},
        )

    return reg.insert_next_version(Adapter, name, build)
