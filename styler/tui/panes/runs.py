"""The Runs tab: training runs; the detail follows the selected run live from its metrics.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from registry import Adapter, BlobStore, Job, Output, Registry, Run
from registry.maintenance import record_gone_runs
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Sparkline, Static
from textual_image.widget import Image as PreviewImage

from ..metrics import MetricsTail, RunStats
from ..provenance import Provenance, Section, fmt_num, fmt_time, run_links, short_id
from ..widgets import ProvenanceView
from .base import TablePane

TAIL_EVERY_S = 0.5
RUNS_EVERY_S = 2.0
RESUMABLE = ("interrupted", "failed")  # what `styler train --resume` continues
SAMPLES_SHOWN = 4  # validation images of the latest step, side by side


def latest_samples(reg: Registry, run: Run):
    """(step, PIL strip) of the run's newest validation images, or (None, None) when it has none.
    Unreadable images are left out (the Outputs tab says what is wrong with them)."""
    from PIL import Image

    outs = [o for o in reg.find(Output, run_id=run.id) if o.kind == "validation" and o.blob]
    if not outs:
        return None, None
    step = max((o.params or {}).get("train_step", 0) for o in outs)
    images = []
    for o in [o for o in outs if (o.params or {}).get("train_step", 0) == step][:SAMPLES_SHOWN]:
        try:
            with Image.open(BlobStore(reg.home).path(o.blob)) as im:
                images.append(im.convert("RGB"))
        except Exception:  # noqa: BLE001 - a preview: a missing or broken blob is skipped
            continue
    if not images:
        return step, None
    h = max(im.height for im in images)
    strip = Image.new("RGB", (sum(im.width for im in images) + 2 * (len(images) - 1), h), (0, 0, 0))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + 2
    return step, strip


@dataclass(frozen=True)
class SamplesPreview:
    """What the detail shows of a run's validation images: its sheet (prompts × steps) when one was
    drawn, else the newest step's images side by side."""

    title: str = ""
    image: object = None  # PIL image or None
    sheet: Path | None = None  # the sheet's file, for `o`


def samples_preview(reg: Registry, run: Run) -> SamplesPreview:
    from PIL import Image

    from ...train.samples import read_sheet_info, sheet_path

    path = sheet_path(reg.home, run.id)
    info = read_sheet_info(path) if path.is_file() else None
    if info is not None:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except OSError:
            image = None
        if image is not None:
            n_prompts, n_steps = len(info.get("prompts") or []), len(info.get("steps") or [])
            return SamplesPreview(f"sheet: {_count(n_prompts, 'prompt')} × {_count(n_steps, 'step')}", image, path)
    step, strip = latest_samples(reg, run)
    return SamplesPreview(f"validation samples at step {step}" if step is not None else "", strip)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def resume_command(run: Run) -> str:
    """The command that continues a stopped run from its last checkpoint."""
    return f"styler train --resume {run.id}"


STATUS_STYLES = {"running": "bold blue", "completed": "green", "failed": "red", "interrupted": "yellow"}


class SheetScreen(ModalScreen[None]):
    """A run's sample sheet over the whole dashboard, with its path; Esc (or o or q) closes it."""

    BINDINGS = [Binding("escape,o,q", "app.pop_screen", "close", key_display="esc")]

    def __init__(self, path: Path, image) -> None:
        super().__init__()
        self.path, self.image = path, image

    def compose(self) -> ComposeResult:
        with Vertical(id="sheet-box"):
            yield Static(Text.assemble((str(self.path), "bold"), ("\nEsc closes", "dim")), id="sheet-path",
                         markup=False)
            yield PreviewImage(self.image, id="sheet-image")


class RunsPane(TablePane):
    BINDINGS = [Binding("o", "open_sheet", "sheet", tooltip="the run's sample sheet (prompts × steps), full screen")]
    # step and loss before the names, and the names cut first, so both stay on screen at 80 columns
    COLUMNS = ("run", "status", "step", "loss", "adapter", "dataset", "method")
    SHRINK = ("adapter", "dataset", "method")
    FILTER_HINT = "filter by run id, status, adapter, method or dataset  (/)"

    class Tailed(Message):
        """New rows were read from the followed run's metrics.jsonl."""

        def __init__(self, run_id: str, stats: RunStats) -> None:
            super().__init__()
            self.run_id = run_id
            self.stats = stats

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset_labels: dict[str, str] = {}
        self.adapter_labels: dict[str, str] = {}
        self.run: Run | None = None
        self.tail: MetricsTail | None = None
        self.stats = RunStats()
        self.preview = SamplesPreview()

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="list"):
                yield from self.compose_table()
            with Vertical(classes="detail"):
                yield Static(id="live", markup=False)
                yield Sparkline([], id="loss-spark")
                yield Static(id="samples-title", markup=False)
                yield PreviewImage(id="samples")
                yield ProvenanceView()

    def on_mount(self) -> None:  # TablePane.on_mount runs too (Textual calls each class's handler)
        self.set_interval(TAIL_EVERY_S, self._tick)
        self.set_interval(RUNS_EVERY_S, self._refresh_runs)

    # -- table -----------------------------------------------------------------------------------
    def read(self, reg: Registry):
        record_gone_runs(reg)  # a run whose process is gone is stored as interrupted, as it is shown
        adapters = {a.id: a.label for a in reg.all(Adapter)}
        return reg.all(Run)[::-1], self.dataset_labels_or_report(reg), adapters

    def loaded(self, data) -> None:
        self.records, self.dataset_labels, self.adapter_labels = data
        shown = self.run
        now = next((r for r in self.records if shown is not None and r.id == shown.id), None)
        if now is not None and (now.status, now.adapter_id, now.error) != (shown.status, shown.adapter_id, shown.error):
            self._load_detail(now.id)  # the followed run ended, failed or was resumed (e.g. by a worker)

    def row(self, r: Run) -> tuple:
        return (short_id(r.id), Text(r.status, style=STATUS_STYLES.get(r.status, "")), f"{r.step}/{r.total_steps}",
                fmt_num(r.loss), self.adapter_labels.get(r.adapter_id or "", "-"),
                self.dataset_labels.get(r.dataset_id or "", "-"), r.method)

    def filter_fields(self, r: Run) -> tuple:
        return (r.id, r.status, r.method, self.dataset_labels.get(r.dataset_id or "", ""),
                self.adapter_labels.get(r.adapter_id or "", ""))

    def _refresh_runs(self) -> None:
        if self.is_on_screen:
            self.refresh_data()  # status and step of the run records

    # -- detail ----------------------------------------------------------------------------------
    def read_detail(self, reg: Registry, key: str):
        run = reg.get(Run, key)
        cfg = run.config or {}
        facts = (("started", fmt_time(run.started_at)), ("finished", fmt_time(run.finished_at)))
        facts += tuple((k, str(cfg[k])) for k in ("rank", "alpha", "lr", "batch", "resolution", "targets") if k in cfg)
        if run.error:
            facts += (("error", run.error),)
        job = next((j for j in reg.find(Job, kind="train") if (j.result or {}).get("run_id") == run.id), None)
        if job is not None:  # trained by `styler worker`: its job resumes the run by itself when put back
            facts += (("job", f"{job.id} ({job.status}{', on ' + job.worker if job.worker else ''})"),)
        if run.status in RESUMABLE and (job is None or job.status not in ("queued", "running")):
            facts += (("resume", resume_command(run)),)
        preview = samples_preview(reg, run)
        if preview.sheet is not None:  # where it is, in the home (o shows the whole path)
            facts += (("sheet", preview.sheet.relative_to(reg.home).as_posix()),)
        prov = Provenance(f"run {run.id}", facts, (Section("made from / made", run_links(reg, run)),))
        return run, prov, preview

    def show_detail(self, key: str | None, detail) -> None:
        view = self.query_one(ProvenanceView)
        if detail is None:
            self.run, self.tail, self.stats = None, None, RunStats()
            view.show(None, "no runs yet: `styler train DATASET`")
            self.preview = SamplesPreview()
            self.query_one("#samples", PreviewImage).image = None
            self.query_one("#samples", PreviewImage).display = False
            self.query_one("#samples-title", Static).update(Text(""))
            self._draw()
            return
        run, prov, preview = detail
        view.show(prov)
        self.preview = preview
        samples = self.query_one("#samples", PreviewImage)
        samples.image = preview.image
        samples.display = preview.image is not None
        self.query_one("#samples-title", Static).update(Text(preview.title, style="dim"))
        if self.run is None or self.run.id != run.id:
            self.tail = MetricsTail(self.app.home / "runs" / run.id / "metrics.jsonl")
            self.stats = RunStats()
        self.run = run
        self._draw()
        self._poll()

    def _tick(self) -> None:
        if self.tail is not None and self.is_on_screen:
            self._poll()

    @work(thread=True, exclusive=True, exit_on_error=False, group="tail", description="following metrics.jsonl")
    def _poll(self) -> None:
        tail, run = self.tail, self.run
        if tail is None or run is None:
            return
        # never dropped when superseded: the rows it read are gone from the file's unread part
        self.post_message(self.Tailed(run.id, tail.poll()))

    @on(Tailed)
    def _on_tailed(self, message: Tailed) -> None:
        message.stop()
        if self.run is None or message.run_id != self.run.id:
            return
        if message.stats.rows_seen < self.stats.rows_seen and message.stats.rows_seen:
            return  # an older poll delivered late
        if message.stats != self.stats:
            self.stats = message.stats
            self._draw()

    def _draw(self) -> None:
        live = self.query_one("#live", Static)
        spark = self.query_one("#loss-spark", Sparkline)
        run, s = self.run, self.stats
        if run is None:
            live.update("")
            spark.data = []
            return
        step = s.step if s.step is not None else run.step
        total = run.total_steps
        t = Text()
        t.append(f"run {short_id(run.id)}  ", style="bold")
        t.append(run.status, style=STATUS_STYLES.get(run.status, ""))
        t.append(f"  {run.method}\n")
        pct = f"  ({100 * step / total:.0f}%)" if total else ""
        t.append("step     ", style="dim").append(f"{step}/{total}{pct}")
        if s.epoch is not None:
            t.append("   epoch ", style="dim").append(str(s.epoch))
        t.append("\nspeed    ", style="dim").append(f"{s.it_per_s:.2f} it/s" if s.it_per_s else "-")
        t.append("\nloss     ", style="dim").append(fmt_num(s.loss if s.loss is not None else run.loss))
        t.append("   val ", style="dim").append(fmt_num(s.val_loss))
        t.append("\nlr       ", style="dim").append(f"{s.lr:.2e}" if s.lr is not None else "-")
        if s.memory:
            t.append("\nmemory   ", style="dim").append(s.memory)
        if not s.rows_seen:
            t.append("\nno metrics yet", style="dim")
        if run.status in RESUMABLE:
            t.append("\nresume   ", style="dim").append(resume_command(run), style="bold")
        if s.bad_lines:
            t.append(f"\n{s.bad_lines} unreadable line(s) in metrics.jsonl skipped", style="yellow")
        t.append("\nloss history", style="dim")
        live.update(t)
        spark.data = list(s.losses)

    def action_open_sheet(self) -> None:
        p = self.preview
        if p.sheet is None or p.image is None:
            hint = f"; build it with `styler runs samples {self.run.id}`" if self.run is not None and p.image else ""
            self.notify(f"this run has no sample sheet{hint}", severity="warning")
            return
        self.app.push_screen(SheetScreen(p.sheet, p.image))

    @on(DataTable.RowSelected)
    def _enter(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(ProvenanceView).enter()
