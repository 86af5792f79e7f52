"""README promises: every command in its reference exists with the options it shows, .ci/run
runs exactly the test command of the Quickstart, and every install goes through the lock."""

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


LOCK = ROOT / "requirements" / "constraints.txt"
TORCH_LOCK = ROOT / "requirements" / "torch-cpu.txt"
# torch's CUDA wheels and the packages only torch needs: never in the lock everyone installs through,
# so a GPU user's own torch build (which may pin some of them exactly) is kept
TORCH_ONLY = {"torch", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "setuptools"}


def quickstart_commands():
    start = README.index("## Quickstart")
    section = README[start:README.index("\n## ", start)]
    return [c.strip() for c in re.findall(r"```bash\n\s*(.+?)\n\s*```", section, re.S)]


def pins(path):
    """{name: {versions}} of a pip requirements/constraints file (markers may split a name)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if m:
            out.setdefault(re.sub(r"[-_.]+", "-", m.group(1)).lower(), set()).add(m.group(2))
    return out


def test_quickstart_and_ci_install_through_the_lock():
    commands = quickstart_commands()
    assert len(commands) == 2 and commands[0].endswith("styler demo") and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for text in [*commands, ci]:
        assert "pip install torch==2.13.0 -c requirements/torch-cpu.txt" in text
        assert re.search(r'pip install -e (\.|"\.\[test\]") -c requirements/constraints\.txt', text)
    # the GPU paragraph and the guide's install step use the lock too
    gpu = README[README.index("**With a GPU"):README.index("## Installs")]
    guide = README[README.index("# 0. Install"):README.index("# 1. ")]
    for text in (gpu, guide):
        assert 'pip install -e ".[gpu]" -c requirements/constraints.txt' in text


def test_the_lock_pins_every_dependency_and_leaves_torch_alone():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["gpu"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group(0)).lower() for r in wanted}
    lock, torch_lock = pins(LOCK), pins(TORCH_LOCK)
    assert names - {"torch"} <= set(lock), sorted(names - {"torch"} - set(lock))
    leaked = {n for n in lock if n in TORCH_ONLY or n.startswith("cuda-")
              or (n.startswith("nvidia-") and n != "nvidia-ml-py")}
    assert not leaked, f"{sorted(leaked)} would override a GPU user's torch build"
    assert torch_lock["torch"] == {"2.13.0"}  # the torch of README's commands and .ci/run
    assert not {n for n in torch_lock if n.startswith(("nvidia-", "cuda-")) or n == "triton"}
    for name in set(lock) & set(torch_lock):  # both files come from one resolution
        assert lock[name] == torch_lock[name], name
    header = LOCK.read_text()
    assert "uv pip compile pyproject.toml --extra test --extra gpu" in header
    assert "requirements/lock.sh" in header
