"""One grammar for adapter specs (`name[@N|@latest][=weight]`, registry.names): the CLI (`mix`,
`generate --adapter`, `jobs add-mix`, `adapters merge`), the worker's payload reader and eval subjects
(what the TUI's eval form queues) accept and refuse exactly the same strings, with the same message."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import InvalidName, Job, NotFound, Registry, is_spec, parse_spec, split_specs

from tests.helpers import run_cli
from tests.tui.helpers import build_fixed_home

GOOD = ["anime=0.5", "anime@1=1", "anime@latest=0", "calligraphy/ink=-0.25", "anime@007=1e-1"]
BAD = ["anime=lots", "anime=", "anime=nan", "anime=inf", "anime@0=1", "anime@x=1", "Anime=1", "a/b/c=1",
       "trailing.=1", "con=1", "书法=1", "a..b/=1"]
NO_BASE = "/nonexistent/base"


def _spec_error(text: str) -> str | None:
    try:
        parse_spec(text)
    except InvalidName as exc:
        return exc.message
    return None


@pytest.fixture
def fixed(styler_home) -> Path:
    build_fixed_home(styler_home)
    return styler_home


def test_the_grammar_itself():
    s = parse_spec("calligraphy/ink@007=0.5")
    assert (s.name.full, s.name.version, s.weight, str(s)) == ("calligraphy/ink", 7, 0.5, "calligraphy/ink@7=0.5")
    assert parse_spec("anime@latest").weight is None and str(parse_spec("anime@latest")) == "anime"
    assert all(is_spec(t) for t in GOOD + BAD)
    # the prompt: anything with a space, or with characters no name is written with before the "="
    assert not any(is_spec(t) for t in ["a cat", "style=ink, a cat", "1girl,solo=x", "anime", "anime@2"])
    specs, words = split_specs(["anime=0.5", "a cat", "ink@2=1"])
    assert [str(s) for s in specs] == ["anime=0.5", "ink@2=1"] and words == ["a cat"]
    for text in BAD:
        assert _spec_error(text), text
    with pytest.raises(InvalidName) as exc:
        parse_spec("anime=lots")
    assert exc.value.exit_code == 2 and exc.value.message.startswith("the weight of anime must be a number")


@pytest.mark.parametrize("text", GOOD + BAD)
def test_cli_worker_and_eval_agree_on_every_spec(fixed, text):
    from styler.eval.run import parse_subject
    from styler.generate.jobs import request_from_payload

    want = _spec_error(text)
    reg = Registry(fixed)
    jobs_before = len(reg.all(Job))
    outcomes = {
        # past the spec, each stops at a later check: a base that does not exist, --steps 0
        "mix": run_cli("mix", text, "a cat", "--base", NO_BASE),
        "generate": run_cli("generate", "a cat", "--adapter", text, "--base", NO_BASE),
        "add-mix": run_cli("jobs", "add-mix", "a cat", text, "--steps", "0"),
        "merge": run_cli("adapters", "merge", "merged", text, "--method", "nosuch"),
    }
    for where, r in outcomes.items():
        if want is None:
            assert r.exit_code != 0 and "weight" not in r.stderr and "invalid" not in r.stderr, (where, r.stderr)
        else:
            assert r.exit_code == 2 and f"error: {want}" in r.stderr, (where, r.stderr)
    try:
        request_from_payload({"prompt": "a cat", "adapters": [text]})
        worker = None
    except InvalidName as exc:
        worker = exc.message
    try:
        parse_subject(text, reg)
        subject = None
    except NotFound:
        subject = None
    except InvalidName as exc:
        subject = exc.message
    assert worker == subject == want
    assert len(reg.all(Job)) == jobs_before  # nothing queued


def test_no_other_module_has_its_own_spec_grammar():
    """The name rule's character class and a spec parser appear only in registry/names.py."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*root.glob("styler/**/*.py"), *root.glob("registry/*.py")]:
        text = path.read_text("utf-8")
        if path.as_posix().endswith("registry/names.py"):
            continue
        if "[a-z0-9]" in text or "def parse_adapter_spec" in text or "_SPEC = re.compile" in text:
            found.append(path.relative_to(root).as_posix())
    assert found == []
