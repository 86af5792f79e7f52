"""Generate payloads have one builder (styler.generate.jobs): a mix queued from the CLI (`styler jobs
add-mix`) and from the TUI's Queue form is the same job, both refuse the same bad requests with the
same message, and the CLI's own renders build their Request from the same payload."""

from __future__ import annotations

import pytest

from registry import Job, Registry

from styler.generate.jobs import request_from_payload
from styler.tui import queue_ops
from tests.helpers import run_cli
from tests.tui.helpers import build_fixed_home


@pytest.fixture
def reg(styler_home) -> Registry:
    return build_fixed_home(styler_home)


def _cli_job(reg: Registry, *args: str) -> Job:
    r = run_cli("jobs", "add-mix", *args)
    assert r.exit_code == 0, r.stderr
    return reg.get(Job, r.stdout.strip())


def _tui_job(reg: Registry, prompt: str, weights, **form) -> Job:
    fields = {"n": "1", "seed": "", "steps": "30", **form}
    return queue_ops.enqueue(reg, "generate", queue_ops.mix_payload(prompt, weights, **fields))


@pytest.mark.parametrize("size", ["64x32", ""])
def test_the_tui_and_the_cli_queue_the_same_payload(reg, size):
    cli = _cli_job(reg, "a cat", "anime@1=0.5", "calligraphy/ink=0.25", "--n", "2", "--seed", "3", "--steps", "4",
                   "--base", "tiny", *(["--size", size] if size else []))
    tui = _tui_job(reg, "a cat", [("anime@1", "0.5"), ("calligraphy/ink", "0.25")], n="2", seed="3", steps="4",
                   size=size, base="tiny")
    assert cli.payload == tui.payload
    assert cli.payload["adapters"] == [["anime@1", 0.5, None], ["calligraphy/ink", 0.25, None]]
    assert ("width" in cli.payload) == bool(size)  # no size: the worker renders at the base's own


def test_the_cli_renders_the_request_a_queued_job_makes(reg):
    from styler.cli.generate_cmd import _request

    job = _cli_job(reg, "a cat", "anime@1=0.5", "--n", "2", "--seed", "3", "--steps", "4", "--size", "64x32",
                   "--base", "tiny")
    direct = _request("a cat", adapters=["anime@1=0.5"], negative="", steps=4, guidance=7.5, seed=3, n=2,
                      size="64x32", scheduler="ddim", base="tiny")
    assert direct == request_from_payload(job.payload)


@pytest.mark.parametrize(
    "cli_args, form, weights, fragment",
    [
        (["--steps", "5000"], {"steps": "5000"}, [("anime@1", "1")], "more than the 1000"),
        (["--size", "60x64"], {"size": "60x64"}, [("anime@1", "1")], "multiples of 8"),
        (["--size", "big"], {"size": "big"}, [("anime@1", "1")], "use WIDTHxHEIGHT"),
        (["--scheduler", "warp"], {"scheduler": "warp"}, [("anime@1", "1")], "unknown --scheduler"),
        (["--seed", str(2**32 - 1), "--n", "2"], {"seed": str(2**32 - 1), "n": "2"}, [("anime@1", "1")], "out of range"),
        ([], {}, [("nosuch", "1")], "no adapter named 'nosuch'"),
        ([], {}, [("anime@1", "1"), ("anime", "1")], "given twice"),
        ([], {}, [("anime@1", "nan")], "finite number"),
        ([], {}, [("Anime", "1")], "invalid name 'Anime'"),
    ],
)
def test_the_tui_and_the_cli_refuse_the_same_requests(reg, cli_args, form, weights, fragment):
    before = len(reg.all(Job))
    specs = [f"{name}={w}" for name, w in weights]
    r = run_cli("jobs", "add-mix", "a cat", *specs, *cli_args)
    assert r.exit_code != 0 and fragment in r.stderr, r.stderr
    cli_message = r.stderr.strip().splitlines()[-1].removeprefix("error: ").split(" (see `")[0]
    with pytest.raises(Exception) as exc:
        _tui_job(reg, "a cat", weights, **form)
    assert getattr(exc.value, "message", str(exc.value)) == cli_message
    assert len(reg.all(Job)) == before  # nothing queued by either


def test_the_worker_reads_older_payloads():
    """`size` and spec strings, as payloads written before the builder (or by hand) carry them."""
    req = request_from_payload({"prompt": "a cat", "size": "64x32", "adapters": ["anime@2=0.5", ["ink", None]],
                                "base": "tiny"})
    assert (req.width, req.height, req.adapters, req.extra) == (64, 32, [("anime@2", 0.5, None), ("ink", 1.0, None)],
                                                                  {"base": "tiny"})
    assert (request_from_payload({"prompt": "x", "size": [16, 24]}).width, request_from_payload({"prompt": "x"}).width) == (16, 512)
