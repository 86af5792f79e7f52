import os
import shutil

import pytest

STYLES = {"anime": "pixel", "watercolor": "watercolor", "ink": "calligraphy"}


@pytest.fixture(scope="session")
def styled_template(tmp_path_factory, tiny_base_dir):
    """A home with the tiny base and three small trained LoRAs, built once per session."""
    from styler.models.tiny import tiny_dir
    from tests.helpers import run_cli

    home = tmp_path_factory.mktemp("styled") / "home"
    old = os.environ.get("STYLER_HOME")
    os.environ["STYLER_HOME"] = str(home)
    try:
        target = tiny_dir(home)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tiny_base_dir, target)
        from styler.data.library import synth_dataset

        for i, (name, kind) in enumerate(STYLES.items()):
            synth_dataset(name, kind=kind, n=4, size=32, seed=i)
            r = run_cli("train", name, "--base", "tiny", "--resolution", "32", "--steps", "3", "--lr", "5e-2",
                        "--rank", str(2 + 2 * i), "--alpha", str(1 + i), "--targets", "attn" if i != 1 else "attn+conv")
            assert r.exit_code == 0, r.stderr
    finally:
        if old is None:
            os.environ.pop("STYLER_HOME", None)
        else:
            os.environ["STYLER_HOME"] = old
    return home


@pytest.fixture
def styled(styler_home, styled_template):
    """This test's own copy of the styled home."""
    shutil.copytree(styled_template, styler_home, symlinks=True)
    return styler_home
