"""Small helpers shared by tests: run the CLI, make image folders."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner


def run_cli(*args: str):
    """Invoke `styler ARGS…` in-process; returns click's Result (stdout/stderr kept apart)."""
    from styler.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def link_tiny(home: Path, tiny_base_dir: Path) -> None:
    """Make `home`'s models/tiny a link to the session's prebuilt tiny base (not a rebuild)."""
    from styler.models.tiny import tiny_dir

    target = tiny_dir(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_base_dir, target)


def rebuild_adapters(keys: tuple[str, ...]) -> tuple[list, list]:
    """Damage the adapters table, run `styler registry rebuild -y`, and return the adapters'
    `keys` before and after, each sorted by label."""
    from registry import Adapter, Registry

    def rows(reg):
        return [[getattr(a, k) for k in keys] for a in sorted(reg.all(Adapter), key=lambda a: a.label)]

    reg = Registry()
    before = rows(reg)
    reg.table_path("adapters").write_bytes(b"\x00\x00")
    r = run_cli("registry", "rebuild", "-y")
    assert r.exit_code == 0, r.stderr
    return before, rows(Registry())


def make_images(folder: Path, n: int = 4, *, size=(48, 40), captions: bool = True, seed: int = 0,
                prefix: str = "img") -> list[Path]:
    """n distinct noisy RGB PNGs with UTF-8 .txt captions beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"{prefix}{i}.png"
        Image.fromarray(arr).save(p)
        if captions:
            p.with_suffix(".txt").write_text(f"永 {i}", encoding="utf-8")
        paths.append(p)
    return paths


@contextmanager
def home_env(home: Path):
    """STYLER_HOME set to `home` inside the block (for session fixtures, which can't monkeypatch)."""
    old = os.environ.get("STYLER_HOME")
    os.environ["STYLER_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("STYLER_HOME", None)
        else:
            os.environ["STYLER_HOME"] = old


def tree(path: Path) -> list[str]:
    """Every file and folder under path, relative, sorted (to compare before/after)."""
    if not path.exists():
        return []
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))
