"""The root command: help, version, home, error mapping, and a light start (no torch)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_group():
    for flag in ("--help", "-h"):
        r = run_cli(flag)
        assert r.exit_code == 0
        for group in ("data", "models", "registry", "home"):
            assert group in r.stdout


def test_no_args_shows_help():
    r = run_cli()
    assert "Usage" in r.stdout + r.stderr


def test_version_and_home(styler_home):
    assert run_cli("--version").stdout.startswith("styler ")
    assert run_cli("home").stdout.strip() == str(styler_home)


def _subprocess(code: str, env_home: Path):
    env = dict(os.environ, STYLER_HOME=str(env_home))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def test_help_and_data_ls_never_import_torch(styler_home):
    code = (
        "import sys\n"
        "from styler.cli.main import main\n"
        "for argv in (['--help'], ['data', 'ls'], ['registry', 'ls'], ['data', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'textual') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = _subprocess(code, styler_home)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout


def test_console_script_maps_errors_to_one_line_and_exit_code(styler_home):
    code = "import sys; from styler.cli.main import main; sys.exit(main(['data', 'show', 'nope']))"
    out = _subprocess(code, styler_home)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: no dataset named 'nope'; see `styler data ls`"
    assert out.stdout == ""


def test_debug_env_shows_the_traceback(styler_home):
    code = "import sys; from styler.cli.main import main; sys.exit(main(['data', 'show', 'nope']))"
    env = dict(os.environ, STYLER_HOME=str(styler_home), STYLER_DEBUG="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode != 0 and "Traceback" in out.stderr and "NotFound" in out.stderr


def test_usage_errors_exit_2():
    r = run_cli("data", "add")
    assert r.exit_code == 2


@pytest.mark.parametrize("argv, line", [
    (["data", "add"], "error: Missing argument 'name'. (see `styler data add --help`)"),
    (["data", "add", "x", "--nosuch"], "error: No such option: --nosuch (see `styler data add --help`)"),
    (["generate", "a cat", "--steps", "abc"], "error: Invalid value for '--steps': "),
    (["trian"], "error: No such command 'trian'. Did you mean 'train'"),
])
def test_click_usage_errors_through_main_are_one_line_and_exit_2(styler_home, capsys, argv, line):
    from styler.cli.main import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(line), captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "unexpected" not in captured.err
    assert captured.out == ""
    assert not styler_home.exists()  # a usage error writes nothing
