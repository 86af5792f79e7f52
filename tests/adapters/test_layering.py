"""styler.adapters is the layer below styler.generate (generate folds and renders adapters): no module
of styler.adapters imports styler.generate, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports anywhere in it, relative imports made absolute."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from .. import generate`
    return found


def test_the_reader_sees_relative_and_function_level_imports(tmp_path):
    path = tmp_path / "styler" / "adapters" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("import os\n\ndef f():\n    from ..generate.engine import Session\n    from .. import generate\n"
                    "    from .lora import AdapterData\n")
    assert {"os", "styler.generate.engine", "styler.generate", "styler.adapters.lora"} <= imported_modules(path, tmp_path)


def test_adapters_never_import_generate():
    files = sorted((ROOT / "styler" / "adapters").glob("*.py"))
    assert files
    offenders = {p.name: sorted(m for m in imported_modules(p) if m == "styler.generate" or m.startswith("styler.generate."))
                 for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}
