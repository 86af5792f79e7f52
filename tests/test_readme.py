"""README promises: every command in its reference exists with the options it shows, and .ci/run
runs exactly the test command of the Quickstart."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def reference_entries():
    """(command path, options) for each `    styler …` line of the Commands section (with its
    continuation lines)."""
    section = README[README.index("## Commands"):README.index("## Troubleshooting")]
    entries, current = [], None
    for line in section.splitlines():
        if line.startswith("    styler "):
            words = line.split()[1:]
            path = []
            for w in words:
                if w.startswith(("-", "[", '"', "'")) or "=" in w or not re.fullmatch(r"[a-z][a-z-]*", w):
                    break
                path.append(w)
            current = (tuple(path), set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-y)\b", line)))
            entries.append(current)
        elif current and line.startswith("        ") and line.strip():
            current[1].update(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-y)\b", line))
        elif not line.strip():
            current = None
    return entries


ENTRIES = reference_entries()


def test_the_reference_is_not_empty():
    paths = {p for p, _ in ENTRIES}
    for expected in [("data", "add"), ("train",), ("mix",), ("eval",), ("scores",), ("registry", "prune"),
                     ("adapters", "export")]:
        assert expected in paths


@pytest.mark.parametrize("path, options", ENTRIES, ids=[" ".join(p) + f"#{i}" for i, (p, _) in enumerate(ENTRIES)])
def test_each_command_exists_with_its_options(path, options, monkeypatch):
    from typer.testing import CliRunner

    from styler.cli.main import app

    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    r = CliRunner().invoke(app, [*path, "--help"])
    assert r.exit_code == 0, (path, r.stdout, r.stderr)
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    missing = sorted(o for o in options if o not in text)
    assert not missing, f"`styler {' '.join(path)}` has no {missing}"


def test_ci_runs_the_quickstart_test_command():
    block = README[README.index("2. Set up and run the tests"):]
    command = re.search(r"```bash\n\s*(.+?)\n\s*```", block, re.S).group(1).strip()
    assert command in (ROOT / ".ci" / "run").read_text()
    assert "pytest" in command
