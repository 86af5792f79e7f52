"""The Outputs tab: generated images with a preview and their recipe; `g` queues a regen."""

from __future__ import annotations

from rich.text import Text
from registry import BlobStore, Output, Registry
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

# textual-image asks the terminal what it can draw when imported, which only works before the
# app takes over stdin: this module is imported by styler.tui.app, before App.run.
from textual_image.widget import Image as PreviewImage

from ..messages import JobsChanged
from ..provenance import fmt_num, fmt_time, output_source, short_id
from ..queue_ops import enqueue, regen_payload
from ..widgets import clip
from .base import TablePane


class OutputsPane(TablePane):
    BINDINGS = [Binding("g", "regen", "regen (queue)", tooltip="queue the highlighted output's recipe again")]
    COLUMNS = ("id", "kind", "prompt", "adapters", "seed")
    FILTER_HINT = "filter by prompt, adapter, kind or id  (/)"
    ENTER_LINKS = False  # the recipe has no links
    SHRINK = ("kind", "prompt", "adapters")  # never the seed

    class Queued(Message):
        def __init__(self, job_id: str, output_id: str) -> None:
            super().__init__()
            self.job_id = job_id
            self.output_id = output_id

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="list"):
                yield from self.compose_table()
            with VerticalScroll(classes="detail", id="preview"):
                yield PreviewImage(id="preview-image")
                yield Static(id="recipe", markup=False)

    def read(self, reg: Registry) -> list[Output]:
        return reg.all(Output)[::-1]  # newest first

    def row(self, o: Output) -> tuple:
        return (short_id(o.id), o.kind, clip(o.prompt, 26), clip(output_source(o), 32),
                o.seed if o.seed is not None else "-")

    def filter_fields(self, o: Output) -> tuple:
        return (o.id, o.kind, o.prompt, output_source(o), o.run_id)

    def read_detail(self, reg: Registry, key: str):
        """The record and its decoded PNG (read here, off the app's thread)."""
        output = reg.get(Output, key)
        if not output.blob:
            return output, None, "no image stored"
        try:
            from PIL import Image

            path = BlobStore(reg.home).path(output.blob)
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except FileNotFoundError:
            return output, None, f"image blob {output.blob[:12]}… is missing; run `styler registry verify`"
        except Exception as exc:  # a corrupt PNG is shown as such, not raised
            return output, None, f"cannot read the image: {exc}"
        return output, image, ""

    def show_detail(self, key: str | None, detail) -> None:
        image = self.query_one("#preview-image", PreviewImage)
        recipe = self.query_one("#recipe", Static)
        if detail is None:
            image.image = None
            recipe.update(Text("no outputs yet: `styler generate` or `styler mix`", style="dim"))
            return
        output, pil, problem = detail
        image.image = pil
        recipe.update(recipe_text(output, problem))

    # -- regen -------------------------------------------------------------------------------------
    def action_regen(self) -> None:
        key = self._shown
        if not key:
            self.app.notify("no output selected", severity="warning")
            return
        self._queue_regen(key)

    @work(thread=True, exclusive=False, exit_on_error=False, group="regen", description="queueing a regen")
    def _queue_regen(self, output_id: str) -> None:
        reg = self.registry()
        job = enqueue(reg, "generate", regen_payload(reg.get(Output, output_id)))
        self.post_message(self.Queued(job.id, output_id))

    @on(Queued)
    def _on_queued(self, message: Queued) -> None:
        message.stop()
        self.app.notify(f"queued generate job {short_id(message.job_id)}: regen of {short_id(message.output_id)} "
                        "(start a worker with w in the Queue tab)", markup=False)
        self.post_message(JobsChanged())

    @on(DataTable.RowSelected)
    def _enter(self, event: DataTable.RowSelected) -> None:
        event.stop()


def recipe_text(o: Output, problem: str = "") -> Text:
    t = Text()
    if problem:
        t.append(problem + "\n", style="yellow")
    t.append(f"output {o.id}\n", style="bold")
    t.append("prompt   ", style="dim").append(o.prompt + "\n")
    if o.negative:
        t.append("negative ", style="dim").append(o.negative + "\n")
    t.append("seed     ", style="dim").append(f"{o.seed}\n")
    if not o.adapters and o.run_id:
        t.append("made by  ", style="dim").append(f"{output_source(o)}  (run {o.run_id})\n")
    else:
        t.append("adapters ", style="dim")
    if not o.adapters and not o.run_id:
        t.append("none (base)\n")
    for a in o.adapters or []:
        t.append(f"\n  {a.get('name', '?')}@{a.get('version', '?')}  weight {fmt_num(a.get('weight'), 3)}"
                 f"  te {fmt_num(a.get('te_weight'), 3)}")
    if o.adapters:
        t.append("\n")
    t.append("render   ", style="dim").append(f"{o.kind} · {o.steps} steps · cfg {fmt_num(o.guidance, 3)} · "
                                                f"{o.scheduler or '-'} · {o.width}x{o.height}\n")
    t.append("base     ", style="dim").append(str((o.base or {}).get("name", "-")) + "\n")
    t.append("created  ", style="dim").append(fmt_time(o.created_at))
    return t
