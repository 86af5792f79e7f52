"""The Queue tab: forms that queue a mixed-LoRA generation, an eval or a training run, and the jobs table.

`c` cancels and `t` retries the highlighted job; `w` starts a `styler worker` in the background
(the app stops it on exit). Jobs are polled every second while the tab shows or a worker runs.
"""

from __future__ import annotations

from rich.text import Text
from registry import Adapter, Job
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, Static
from textual.widgets.selection_list import Selection
from textual.worker import get_current_worker

from ..provenance import fmt_time, short_id
from ..queue_ops import FormError, cancel, enqueue, eval_payload, list_jobs, mix_payload, retry, train_values
from ..widgets import CheckList, RecordTable, clip, current_key, fill_table, move_to_key
from .base import RegistryPane

POLL_EVERY_S = 1.0
JOB_STYLES = {"queued": "yellow", "running": "bold blue", "done": "green", "failed": "red", "cancelled": "dim"}


def field(label: str, value: str = "", **kwargs) -> Input:
    """A form input whose label stays on its top border once a value is typed (a placeholder goes)."""
    box = Input(value, **kwargs)
    box.border_title = label
    return box


def job_subject(job: Job) -> str:
    """The jobs table's short "what": a generation's prompt, an eval's subject."""
    p = job.payload or {}
    if job.kind == "generate":
        return str(p.get("prompt", ""))
    if job.kind == "eval":
        return str(p.get("subject", ""))
    if job.kind == "train":
        c = p.get("config") or {}
        return str(c.get("name") or c.get("dataset", ""))
    if job.kind == "study":
        return f"study {p.get('study', '')}"
    return ", ".join(f"{k}={v}" for k, v in p.items())


def job_summary(job: Job) -> str:
    p = job.payload or {}
    if job.kind == "generate":
        mix = " + ".join(f"{a[0]}×{a[1]:g}" if isinstance(a[1], (int, float)) else str(a[0])
                         for a in p.get("adapters") or [] if a)
        return f"{p.get('prompt', '')} [{mix or 'base'}] n={p.get('n')} seed={p.get('seed')}"
    if job.kind == "eval":
        return f"{p.get('subject', '')} n={p.get('n')} clip={p.get('clip') or 'default'}"
    if job.kind == "train":
        from ...train.jobs import describe

        c = p.get("config") or {}
        return f"{describe(p)}, rank {c.get('rank', 16)}, lr {c.get('lr', 1e-4):g}"
    if job.kind == "study":
        return f"render and score study {p.get('study', '')} once its {len(job.after)} training job(s) end"
    return ", ".join(f"{k}={v}" for k, v in p.items())


class QueuePane(RegistryPane):
    BINDINGS = [
        Binding("c", "cancel_job", "cancel", tooltip="cancel the highlighted job"),
        Binding("t", "retry_job", "retry", tooltip="queue the highlighted (failed or cancelled) job again"),
        Binding("w", "start_worker", "worker", tooltip="start a `styler worker` that runs the queued jobs"),
    ]

    class AdaptersLoaded(Message):
        def __init__(self, labels: list[str]) -> None:
            super().__init__()
            self.labels = labels

    class JobsLoaded(Message):
        def __init__(self, jobs: list[Job]) -> None:
            super().__init__()
            self.jobs = jobs

    class Queued(Message):
        def __init__(self, job: Job, action: str) -> None:
            super().__init__()
            self.job = job
            self.action = action

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.adapter_labels: list[str] = []
        self.jobs: list[Job] = []
        self._weights: dict[str, Horizontal] = {}
        self._select_job: str | None = None  # a job just queued: the cursor goes to it

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="queue-side"):
                with VerticalScroll(id="queue-form", can_focus=False):  # Tab goes field by field
                    yield Label("Generate with a mix of adapters", classes="form-title")
                    yield CheckList(id="mix-adapters")
                    yield Vertical(id="weights")
                    yield field("prompt", placeholder="what to draw", id="mix-prompt")
                    with Horizontal(classes="form-row"):
                        yield field("n", "1", placeholder="images", id="mix-n", type="integer")
                        yield field("seed", placeholder="random", id="mix-seed", type="integer")
                        yield field("steps", "30", id="mix-steps", type="integer")
                    with Horizontal(classes="form-row"):
                        yield field("size WxH", placeholder="the base's", id="mix-size")
                        yield field("base", placeholder="default", id="mix-base")
                    yield Label("Evaluate", classes="form-title")
                    yield field("subject", placeholder="ADAPTER, a=0.5+b=0.5 or baseline", id="eval-subject")
                    with Horizontal(classes="form-row"):
                        yield field("n", "8", placeholder="per subject", id="eval-n", type="integer")
                        yield field("clip", placeholder="default", id="eval-clip")
                    yield Label("Train", classes="form-title")
                    yield field("dataset", placeholder="NAME[@VERSION] to train on", id="train-dataset")
                    with Horizontal(classes="form-row"):
                        yield field("name", placeholder="the dataset's", id="train-name")
                        yield field("method", placeholder="lora", id="train-method")
                    with Horizontal(classes="form-row"):
                        yield field("steps", placeholder="1000", id="train-steps", type="integer")
                        yield field("rank", placeholder="16", id="train-rank", type="integer")
                    with Horizontal(classes="form-row"):
                        yield field("lr", placeholder="1e-4", id="train-lr")
                        yield field("lr-text", placeholder="= lr", id="train-lr-text")
                    with Horizontal(classes="form-row"):
                        yield field("base", placeholder="default", id="train-base")
                        yield field("resolution", placeholder="native", id="train-resolution", type="integer")
                # outside the scrolling form, so both stay on screen at 80x24 with weights open
                with Horizontal(id="queue-buttons"):
                    yield Label("Queue", id="queue-label")  # one word for three buttons: they fit at 80x24
                    yield Button("mix", id="queue-generate", variant="primary", compact=True)
                    yield Button("eval", id="queue-eval", compact=True)
                    yield Button("train", id="queue-train", compact=True)
            with Vertical(id="jobs-box"):
                yield Static(id="worker-status", markup=False)
                yield RecordTable(id="jobs-table", cursor_type="row", zebra_stripes=True, enter_hint=False)
                yield Static(id="job-detail", markup=False)

    def on_mount(self) -> None:
        self.jobs_table.add_columns("job", "kind", "status", "tries", "what", "error")
        self.set_interval(POLL_EVERY_S, self._tick)
        self._draw_worker_status()

    @property
    def jobs_table(self) -> DataTable:
        return self.query_one("#jobs-table", DataTable)

    def focus_main(self) -> None:
        self.jobs_table.focus()

    def focus_filter(self) -> bool:
        """`/` here jumps to the start of the generate form."""
        self.query_one("#mix-adapters", CheckList).focus()
        return True

    # -- reading -------------------------------------------------------------------------------
    def refresh_data(self) -> None:
        self._load_adapters()
        self.poll_jobs()

    def _tick(self) -> None:
        self._draw_worker_status()
        if self.is_on_screen or self.app.background.running():
            self.poll_jobs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="adapters", description="reading adapters")
    def _load_adapters(self) -> None:
        labels = [a.label for a in self.registry().all(Adapter)]
        if not get_current_worker().is_cancelled:
            self.post_message(self.AdaptersLoaded(labels))

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs", description="reading the job queue")
    def poll_jobs(self) -> None:
        jobs = list_jobs(self.registry())
        if not get_current_worker().is_cancelled:
            self.post_message(self.JobsLoaded(jobs))

    @on(AdaptersLoaded)
    def _on_adapters(self, message: AdaptersLoaded) -> None:
        message.stop()
        if message.labels == self.adapter_labels:
            return
        self.adapter_labels = message.labels
        sel = self.query_one("#mix-adapters", CheckList)
        chosen = set(sel.selected)
        sel.clear_options()
        sel.add_options([Selection(Text(label), label, label in chosen) for label in message.labels])
        self._sync_weights()

    @on(JobsLoaded)
    def _on_jobs(self, message: JobsLoaded) -> None:
        message.stop()
        self.jobs = sorted(message.jobs, key=lambda j: j.id, reverse=True)
        rows = []
        for j in self.jobs:
            status = j.status + (" (cancel asked)" if j.cancel_requested and j.status == "running" else "")
            rows.append((j.id, (short_id(j.id), j.kind, Text(status, style=JOB_STYLES.get(j.status, "")), j.attempts,
                                clip(job_subject(j), 24), clip(j.error, 30) or "-")))
        fill_table(self.jobs_table, rows, shrink=(4, 5))  # what, error
        if self._select_job is not None and move_to_key(self.jobs_table, self._select_job):
            self._select_job = None
        self._draw_job()

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _job_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._draw_job()

    def _draw_job(self) -> None:
        """The highlighted job in full: what it does, its error, what it made."""
        key = current_key(self.jobs_table)
        job = next((j for j in self.jobs if j.id == key), None)
        detail = self.query_one("#job-detail", Static)
        if job is None:
            detail.update(Text("no jobs yet: queue one with the form", style="dim"))
            return
        t = Text()
        t.append(f"job {job.id}  ", style="bold").append(job.kind).append("  ")
        t.append(job.status, style=JOB_STYLES.get(job.status, ""))
        t.append(f"  queued {fmt_time(job.created_at)}\n", style="dim")
        t.append("what    ", style="dim").append(job_summary(job) + "\n")
        if job.worker:
            t.append("worker  ", style="dim").append(f"{job.worker}  (heartbeat {fmt_time(job.heartbeat_at)})\n")
        if job.error:
            t.append("error   ", style="dim").append(job.error + "\n", style="red")
        result = job.result or {}
        if job.kind == "train" and result.get("run_id"):
            t.append("run     ", style="dim").append(f"{result['run_id']}  step {result.get('step', 0)}/"
                                                      f"{result.get('total_steps', '?')}  (Runs tab: 3)\n")
            if result.get("adapter"):
                t.append("made    ", style="dim").append(f"{result['adapter']}\n")
        outputs = result.get("output_ids") or []
        if outputs:
            t.append("made    ", style="dim").append(", ".join(short_id(o) for o in outputs) + "\n")
        detail.update(t.rstrip() or t)

    def job_status(self, job_id: str) -> str | None:
        return next((j.status for j in self.jobs if j.id == job_id), None)

    # -- the mix form ------------------------------------------------------------------------------
    @on(CheckList.SelectedChanged, "#mix-adapters")
    def _selected(self, event: CheckList.SelectedChanged) -> None:
        event.stop()
        self._sync_weights()

    def _sync_weights(self) -> None:
        chosen = self.query_one("#mix-adapters", CheckList).selected
        box = self.query_one("#weights", Vertical)
        for label in list(self._weights):
            if label not in chosen:
                self._weights.pop(label).remove()
        for label in chosen:
            if label not in self._weights:
                row = Horizontal(Label(Text(label), classes="weight-label"),
                                 field("weight", "1.0", classes="weight", type="number"), classes="weight-row")
                self._weights[label] = row
                box.mount(row)

    def weight_input(self, label: str) -> Input:
        return self._weights[label].query_one(Input)

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value

    @on(Button.Pressed, "#queue-generate")
    def _queue_generate(self, event: Button.Pressed) -> None:
        event.stop()
        chosen = self.query_one("#mix-adapters", CheckList).selected
        try:
            payload = mix_payload(self._value("#mix-prompt"), [(label, self.weight_input(label).value) for label in chosen],
                                  n=self._value("#mix-n"), seed=self._value("#mix-seed"),
                                  steps=self._value("#mix-steps"), size=self._value("#mix-size"),
                                  base=self._value("#mix-base"))
        except FormError as exc:
            self.app.notify(str(exc), severity="error", markup=False)
            return
        self._enqueue("generate", payload)

    @on(Button.Pressed, "#queue-eval")
    def _queue_eval(self, event: Button.Pressed) -> None:
        event.stop()
        try:
            payload = eval_payload(self._value("#eval-subject"), n=self._value("#eval-n"), clip=self._value("#eval-clip"))
        except FormError as exc:
            self.app.notify(str(exc), severity="error", markup=False)
            return
        self._enqueue("eval", payload)

    @on(Button.Pressed, "#queue-train")
    def _queue_train(self, event: Button.Pressed) -> None:
        event.stop()
        try:
            values = train_values(self._value("#train-dataset"), name=self._value("#train-name"),
                                  method=self._value("#train-method"), steps=self._value("#train-steps"),
                                  rank=self._value("#train-rank"), lr=self._value("#train-lr"),
                                  lr_text=self._value("#train-lr-text"), base=self._value("#train-base"),
                                  resolution=self._value("#train-resolution"))
        except FormError as exc:
            self.app.notify(str(exc), severity="error", markup=False)
            return
        self._enqueue("train", values)

    # writes are not exclusive: a second press must not mark the first one's worker cancelled
    @work(thread=True, exclusive=False, exit_on_error=False, group="enqueue", description="queueing a job")
    def _enqueue(self, kind: str, payload: dict) -> None:
        self.post_message(self.Queued(enqueue(self.registry(), kind, payload), "queued"))

    @on(Queued)
    def _on_queued(self, message: Queued) -> None:
        message.stop()
        job = message.job
        self.app.notify(f"{message.action} {job.kind} job {short_id(job.id)}", markup=False)
        self._select_job = job.id
        self.poll_jobs()

    # -- job actions -------------------------------------------------------------------------------
    def action_cancel_job(self) -> None:
        key = current_key(self.jobs_table)
        if key is None:
            self.app.notify("no job selected", severity="warning")
        else:
            self._job_action(key, "cancel")

    def action_retry_job(self) -> None:
        key = current_key(self.jobs_table)
        if key is None:
            self.app.notify("no job selected", severity="warning")
        else:
            self._job_action(key, "retry")

    @work(thread=True, exclusive=False, exit_on_error=False, group="job-action", description="changing a job")
    def _job_action(self, job_id: str, action: str) -> None:
        reg = self.registry()
        job = cancel(reg, job_id) if action == "cancel" else retry(reg, job_id)
        if isinstance(job, Job):
            self.post_message(self.Queued(job, "cancelled" if action == "cancel" else "requeued"))
        else:
            self.post_message(self.Queued(reg.get(Job, job_id), action))

    def action_start_worker(self) -> None:
        bg = self.app.background
        if bg.running():
            self.app.notify(f"a worker is already running (pid {bg.pid})", markup=False)
            return
        try:
            pid = bg.start()
        except OSError as exc:
            self.app.notify(f"cannot start a worker: {exc}", severity="error", markup=False)
            return
        self.app.notify(f"started worker pid {pid}; log {bg.log_path}", markup=False)
        self._draw_worker_status()

    def _draw_worker_status(self) -> None:
        bg = self.app.background
        t = Text()
        if bg.running():
            t.append(f"worker pid {bg.pid} running", style="green")
        elif bg.process is not None:
            t.append(f"worker pid {bg.pid} exited with code {bg.exit_code()}", style="yellow")
        else:
            t.append("no worker started here: press w to start one (or run `styler worker`)", style="dim")
        if bg.log_path is not None:
            t.append(f"  ·  log {bg.log_path}", style="dim")
        t.append("\nc cancel · t retry the highlighted job", style="dim")
        self.query_one("#worker-status", Static).update(t)
