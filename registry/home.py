"""Where styler keeps everything: STYLER_HOME, else the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "STYLER_HOME"


def styler_home() -> Path:
    """The home directory (not created here)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("styler", appauthor=False))
