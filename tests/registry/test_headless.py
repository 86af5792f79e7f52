"""registry/ stands alone: importing it loads no torch, rich, textual, typer or styler."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_registry_imports_nothing_heavy():
    code = (
        "import sys, registry, registry.maintenance, registry.rebuild, registry.store, registry.blobs, registry.names; "
        "print(','.join(m for m in ('torch', 'rich', 'textual', 'typer', 'styler', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_registry_source_never_imports_styler():
    import re

    pattern = re.compile(r"^\s*(import styler\b|from styler\b)", re.M)
    for path in (ROOT / "registry").rglob("*.py"):
        assert not pattern.search(path.read_text()), path
