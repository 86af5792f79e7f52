"""Small widgets and helpers the panes share. User text always goes in as `rich.text.Text`, never
as markup, so a prompt like "[bold]x" shows literally."""

from __future__ import annotations

import math
from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import DataTable, OptionList, SelectionList, Static
from textual.widgets.option_list import Option

from .messages import Navigate
from .provenance import Link, Provenance

BLOCKS = " ▏▎▍▌▋▊▉█"


def plain(value, style: str = "") -> Text:
    """A table cell or label that is never parsed as markup."""
    return value if isinstance(value, Text) else Text("-" if value is None else str(value), style=style)


def clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def fill_table(table: DataTable, rows: Iterable[tuple[str, tuple]], shrink: Iterable[int] = ()) -> None:
    """Replace a table's rows, keeping the cursor on the same key where it still exists.

    The columns numbered in `shrink` give up width (their cells cut with …) until the row fits
    the table's width, so the other columns (a seed, a step, a loss) stay whole and on screen.
    Column widths are set here from the new cells, before the rows go in: DataTable otherwise
    measures them on its next idle, and a frame painted in between stays cached with the old
    widths (its line cache is keyed by an update count that measuring does not bump)."""
    rows = [(key, tuple(plain(c) for c in cells)) for key, cells in rows]
    shrink = tuple(shrink)
    table._styler_source = (rows, shrink)  # for a refit when the table is resized
    fit = table.scrollable_content_region.width if shrink else 0
    signature = [fit, *((key, tuple(c.plain for c in cells)) for key, cells in rows)]
    if getattr(table, "_styler_rows", None) == signature:
        return  # unchanged: no flicker, no cursor jump
    table._styler_rows = signature
    widths = fit_widths([max([column.label.cell_len, *(cells[i].cell_len for _, cells in rows if i < len(cells))])
                         for i, column in enumerate(table.ordered_columns)], fit, shrink, table.cell_padding)
    current = current_key(table)
    table.clear()
    for column, width in zip(table.ordered_columns, widths):
        column.auto_width = False
        column.width = width
    for key, cells in rows:
        table.add_row(*(cut(c, widths[i]) if i < len(widths) else c for i, c in enumerate(cells)), key=key)
    if current is not None:
        move_to_key(table, current)


def refit(table: DataTable) -> None:
    """Fill a table again from its last rows, for its new width."""
    source = getattr(table, "_styler_source", None)
    if source is not None and source[1]:
        fill_table(table, *source)


def fit_widths(natural: list[int], fit: int, shrink: tuple[int, ...], padding: int = 1, least: int = 4) -> list[int]:
    """Column widths that fit `fit` cells (0: no limit), narrowing the widest of `shrink` first."""
    widths = list(natural)
    excess = sum(w + 2 * padding for w in widths) - fit
    shrink = [i for i in shrink if i < len(widths)]
    while fit and excess > 0 and shrink:
        i = max(shrink, key=lambda j: widths[j])
        if widths[i] <= least:
            break
        widths[i] -= 1
        excess -= 1
    return widths


def cut(cell: Text, width: int) -> Text:
    if cell.cell_len <= width:
        return cell
    cell = cell.copy()
    cell.truncate(width, overflow="ellipsis")
    return cell


def set_widths(table: DataTable, rows: list[tuple]) -> None:
    """Fix each column's width to its widest cell or label."""
    for i, column in enumerate(table.ordered_columns):
        width = max([column.label.cell_len, *(cells[i].cell_len for cells in rows if i < len(cells))])
        column.auto_width = False
        column.width = width


def current_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:  # the cursor may sit past the end right after a clear
        return None


def move_to_key(table: DataTable, key: str) -> bool:
    try:
        index = table.get_row_index(key)
    except Exception:
        return False
    table.move_cursor(row=index, scroll=True)
    return True


class RecordTable(DataTable):
    """A table of records whose Enter (into the row's provenance links) is listed in the footer;
    `enter_hint=None` for a table where Enter does nothing."""

    BINDINGS = [Binding("enter", "select_cursor", "links")]

    def __init__(self, *args, enter_hint: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.enter_hint = enter_hint

    def on_resize(self) -> None:
        refit(self)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "select_cursor" and not self.enter_hint:
            return False
        return super().check_action(action, parameters)


class CheckList(SelectionList):
    """A SelectionList whose boxes read `[x]` and `[ ]`: the stock `▐X▌` differs only in colour."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        index = self.scroll_offset.y + y
        if len(segments) < 4 or not 0 <= index < self.option_count:
            return strip
        mark = "[x]" if self.get_option_at_index(index).value in self._selected else "[ ]"
        # the stock button is three segments (left edge, X, right edge), then a space and the prompt
        return Strip([Segment(mark, segments[1].style), *segments[3:]], strip.cell_length)


class ProvenanceView(Vertical):
    """Facts about one record and the links of its chain; Enter on a link navigates there."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.provenance: Provenance | None = None
        self._links: list[Link] = []

    def compose(self) -> ComposeResult:
        yield Static(id="facts", markup=False)
        yield OptionList(id="links")

    def show(self, prov: Provenance | None, message: str = "") -> None:
        self.provenance = prov
        facts = self.query_one("#facts", Static)
        links = self.query_one("#links", OptionList)
        if prov is None:
            facts.update(Text(message, style="dim"))
            links.clear_options()
            self._links = []
            return
        body = Text(prov.title + "\n", style="bold")
        for key, value in prov.facts:
            body.append(f"{key:<13}", style="dim").append(str(value) + "\n")
        facts.update(body.rstrip() or body)
        options: list[Option] = []
        self._links = []
        for section in prov.sections:
            head = Text(section.title, style="bold")
            if section.note:
                head.append(f"  {section.note}", style="dim")
            options.append(Option(head, disabled=True))
            for link in section.links:
                options.append(Option(Text("  → ") + Text(link.text), id=f"link-{len(self._links)}"))
                self._links.append(link)
        links.set_options(options)

    def enter(self) -> None:
        """Focus the links with the first one highlighted (Enter on a table row lands here)."""
        links = self.query_one("#links", OptionList)
        first = next((i for i in range(links.option_count) if not links.get_option_at_index(i).disabled), None)
        if first is not None:
            links.highlighted = first
        links.focus()

    @property
    def text(self) -> str:
        return self.provenance.text() if self.provenance else ""

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id and event.option_id.startswith("link-"):
            link = self._links[int(event.option_id[5:])]
            self.post_message(Navigate(link.tab, link.target))


def bar_chart(values: list[tuple[str, float | None]], *, width: int = 40, best: str | None = None,
              lower_is_better: bool = False) -> Text:
    """Horizontal bars in eighth-blocks, one per subject, scaled to the compared range.

    The smallest value gets one cell and the largest the full width, so 0.93 and 0.97 look
    different; a last line says the bars do not start at 0."""
    valid = [v for _, v in values if v is not None and math.isfinite(v)]
    out = Text()
    if not valid:
        return Text("no values", style="dim")
    lo, hi = min(valid), max(valid)
    label_w = min(24, max(len(name) for name, _ in values))
    for name, value in values:
        out.append(f"{clip(name, label_w):<{label_w}} ", style="bold" if name == best else "")
        if value is None or not math.isfinite(value):
            out.append("n/a\n", style="dim")
            continue
        share = (value - lo) / (hi - lo) if hi > lo else 1.0
        eighths = 8 + round(share * (width - 1) * 8)
        bar = BLOCKS[-1] * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")
        out.append(f"{bar:<{width}}", style="green" if name == best else "cyan")
        out.append(f" {value:.4g}" + (" ★" if name == best else "") + "\n")
    out.append("lower is better" if lower_is_better else "higher is better", style="dim")
    if hi > lo:
        out.append(f"  ·  bars span {lo:.4g} … {hi:.4g}, not from 0", style="dim")
    return out
