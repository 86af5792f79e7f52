"""A `styler worker` subprocess started from the dashboard: logs to a file, stopped on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STOP_WAIT_S = 5.0


class BackgroundWorker:
    """One worker process at a time; `stop()` terminates it (then kills it if it hangs)."""

    def __init__(self, home: str | os.PathLike, command: list[str] | None = None):
        self.home = Path(home)
        self.command = command or [sys.executable, "-m", "styler", "worker"]
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def start(self) -> int:
        """Start the worker; returns its pid. Its stdout and stderr go to home/logs/worker-*.log."""
        if self.running():
            return self.pid
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        env = {**os.environ, "STYLER_HOME": str(self.home)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return self.process.pid

    def release(self) -> int | None:
        """Let the worker outlive the app (it runs in its own session); returns its pid."""
        pid = self.pid if self.running() else None
        self.process = None
        return pid

    def stop(self) -> None:
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
