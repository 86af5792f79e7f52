"""`styler worker` and `styler jobs`: run queued jobs, and queue, list, cancel and retry them."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import BatchOpt, DeviceOpt, DtypeOpt, escape, note, out, print_json, registry

def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def worker(
    once: Annotated[bool, typer.Option("--once", help="Run at most one job, then exit.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass for jobs that don't say (each with its own seed).")] = 1,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty queue.")] = 1.0,
    stale_after: Annotated[float, typer.Option("--stale-after", help="Requeue running jobs whose worker sent no heartbeat for this many seconds.")] = 60.0,
) -> None:
    """Run queued jobs (generate, eval, train, study) until stopped; start one worker per GPU (--device cuda:N)."""
    from ..worker import run_worker

    rc = run_worker(once=once, device=device, dtype=dtype, batch=batch, poll_s=poll, stale_after_s=stale_after, log=_log)
    if rc:
        raise typer.Exit(rc)


jobs_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                       help="The job queue that `styler worker` runs: list, add, cancel, retry.")


def _summary(job) -> str:
    p = job.payload
    if job.kind == "generate":
        mix = " + ".join(f"{a[0]}={1.0 if len(a) < 2 or a[1] is None else a[1]:g}" if isinstance(a, (list, tuple))
                         else str(a) for a in p.get("adapters", []))
        return f"{p.get('prompt', '')!r} [{mix or 'base'}] n={p.get('n', 1)}"
    if job.kind == "eval":
        return str(p.get("subject", ""))
    if job.kind == "train":
        from ..train.jobs import describe

        return describe(p)
    if job.kind == "study":
        return f"render study {p.get('study', '?')}"
    return ""


def _state(job) -> str:
    if job.kind == "train" and job.result.get("run_id"):
        r = job.result
        where = f"on {job.worker} " if job.status == "running" else ""
        made = f", {r['adapter']}" if r.get("adapter") else ""
        error = f"; {job.error}" if job.status == "failed" else ""
        return f"{where}run {r['run_id']} step {r.get('step', 0)}/{r.get('total_steps', '?')}{made}{error}"
    if job.status == "queued" and job.after:
        return f"after {len(job.after)} job(s)"
    if job.status == "running":
        done = len(job.result.get("output_ids", []))
        total = job.result.get("n") or job.payload.get("n")
        progress = f" {done}/{total}" if total else ""
        return f"on {job.worker}{progress}" + (" (cancel requested)" if job.cancel_requested else "")
    if job.status == "failed":
        return job.error
    if job.status in ("done", "cancelled") and "output_ids" in job.result:
        return f"{len(job.result['output_ids'])} output(s)"
    return ""


@jobs_app.command("ls")
def ls(
    status: Annotated[Optional[str], typer.Option(help="Only jobs with this status: queued, running, done, failed, cancelled.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List jobs, oldest first."""
    from registry.jobs import list_jobs

    found = list_jobs(registry(), status)
    if as_json:
        print_json([j.to_dict() for j in found])
        return
    if not found:
        note("no jobs" + (f" with status {status}" if status else "") + "; queue one with `styler jobs add-mix`")
        return
    for j in found:
        out.print(f"{j.id}  {j.status:<9}  {j.kind:<8}  {escape(_summary(j))}  [dim]{escape(_state(j))}[/]")


@jobs_app.command("add-mix")
def add_mix(
    items: Annotated[list[str], typer.Argument(help="The prompt (quoted) and NAME=WEIGHT for each adapter, e.g. \"a cat\" anime=0.5 watercolor=0.5.", show_default=False)],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the first image (the next ones add 1); random if not given.")] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 30,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT, multiples of 8 (default: the base's native size).")] = "",
    scheduler: Annotated[str, typer.Option("--scheduler", help="ddim | euler | euler-a | dpm++ | dpm++-karras | unipc | pndm | ddpm.")] = "ddim",
    guidance: Annotated[float, typer.Option(help="CFG scale.")] = 7.5,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    base: Annotated[Optional[str], typer.Option(help="Base model: tiny, an HF repo id, a folder or a .safetensors file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Queue an exact weighted mix (a generate job) for `styler worker`."""
    from registry import split_specs

    from ..errors import UsageError
    from ..generate.jobs import enqueue_generate, generate_payload

    specs, words = split_specs(items)  # NAME[@V]=WEIGHT; anything else is the prompt
    if len(words) != 1:
        raise UsageError(f"give exactly one prompt (quoted) and NAME=WEIGHT per adapter; got {len(words)} "
                         f"other argument(s): {', '.join(map(repr, words[:3]))}")
    if not specs:
        raise UsageError("no adapters in the mix; give NAME=WEIGHT, e.g. \"a cat\" anime=0.5 watercolor=0.5")
    payload = generate_payload(words[0], specs, negative=negative, n=n, seed=seed, steps=steps, guidance=guidance,
                               scheduler=scheduler, size=size, base=base)
    job = enqueue_generate(registry(), payload)  # bad numbers or adapters fail now, and nothing is queued
    if as_json:
        print_json(job.to_dict())
        return
    out.print(job.id)
    note(f"queued {_summary(job)}; run `styler worker` to render it, `styler jobs ls` to follow it")


@jobs_app.command("cancel")
def cancel(job_id: Annotated[str, typer.Argument(help="The job id (see `styler jobs ls`).", show_default=False)]) -> None:
    """Cancel a queued job now, or ask a running job's worker to stop after its current image."""
    from registry.jobs import cancel as cancel_job

    job = cancel_job(registry(), job_id)
    if job.status == "running":
        out.print(f"{job.id}  cancel requested; {escape(job.worker or 'its worker')} stops after the current image")
    else:
        out.print(f"{job.id}  cancelled")


@jobs_app.command("retry")
def retry(job_id: Annotated[str, typer.Argument(help="The job id (see `styler jobs ls`).", show_default=False)]) -> None:
    """Queue a failed or cancelled job again, from the start."""
    from registry.jobs import retry as retry_job

    job = retry_job(registry(), job_id)
    out.print(f"{job.id}  queued")
