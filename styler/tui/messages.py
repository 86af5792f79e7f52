"""App-wide messages: ones any pane may send and the app handles."""

from __future__ import annotations

from textual.message import Message


class Navigate(Message):
    """Show a record in another tab (`tab` is a pane id such as "datasets"; `target` a record id,
    or a subject name for the Scores tab)."""

    def __init__(self, tab: str, target: str) -> None:
        super().__init__()
        self.tab = tab
        self.target = target


class WorkerFailed(Message):
    """A background read or write failed; the app shows it as an error notification."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__()
        self.what = what
        self.error = error

    @property
    def text(self) -> str:
        message = getattr(self.error, "message", None) or str(self.error) or type(self.error).__name__
        return f"{self.what}: {message}"


class JobsChanged(Message):
    """Jobs were queued, cancelled or retried: the Queue tab should poll now."""
