"""`styler data captions`: list a version's captions, or edit them (--set, --replace, --prefix,
--unprefix) into the next version; the edited version never changes, bad edits write nothing."""

from __future__ import annotations

import json

from registry import Dataset, Registry
from styler.data.caption_edits import CaptionDraft, leading_tag_len
from styler.data.captions import compose, mentions
from tests.helpers import make_images, run_cli, tree


def _captions(home, label: str) -> list[str]:
    d = Registry().resolve(Dataset, label)
    return [json.loads(line)["text"] for line in (home / d.path / "captions.jsonl").read_text("utf-8").splitlines()]


def _dataset(home, tmp_path, texts=("a red fox", "ink, a cat", "inkwell on a desk")):
    src = tmp_path / "src"
    make_images(src, len(texts), captions=False)
    for i, text in enumerate(texts):
        (src / f"img{i}.txt").write_text(text, "utf-8")
    assert run_cli("data", "add", "ink", src).exit_code == 0
    return Registry().resolve(Dataset, "ink")


def test_lists_then_edits_into_a_new_version(styler_home, tmp_path):
    v1 = _dataset(styler_home, tmp_path)
    r = run_cli("data", "captions", "ink")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["img0.png  [train]  a red fox", "img1.png  [train]  ink, a cat",
                                     "img2.png  [train]  inkwell on a desk"]
    before = {p: (styler_home / v1.path / p).read_bytes() for p in ("captions.jsonl", "manifest.json")}

    r = run_cli("data", "captions", "ink", "--set", "img2.png=an inkwell", "--replace", "a =the ",
                "--unprefix", "ink", "--prefix", "sumi")
    assert r.exit_code == 0, r.stderr
    assert "ink@2" in r.stdout and "3 of 3 captions changed" in r.stdout
    assert _captions(styler_home, "ink@2") == ["sumi, the red fox", "sumi, the cat", "sumi, an inkwell"]
    v2 = Registry().resolve(Dataset, "ink@2")
    assert v2.caption_from == "edited" and v2.options["derived_from"]["id"] == v1.id
    assert {p: (styler_home / v1.path / p).read_bytes() for p in before} == before

    # the same edits in JSON, and a second edit of the second version
    r = run_cli("data", "captions", "ink@2", "--unprefix", "sumi", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dataset"]["version"] == 3 and out["from"] == "ink@2" and out["changed"] == 3
    assert [c["text"] for c in out["captions"]] == ["the red fox", "the cat", "an inkwell"]
    assert run_cli("data", "verify").exit_code == 0


def test_dry_run_and_bad_edits_write_nothing(styler_home, tmp_path):
    _dataset(styler_home, tmp_path)
    before = tree(styler_home / "datasets")
    r = run_cli("data", "captions", "ink", "--replace", "fox=wolf", "--dry-run")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == ["img0.png  [train]  a red wolf", "  was a red fox"]
    assert "nothing was written" in r.stderr
    for args, message in (
        (["--replace", "zebra=horse"], "'zebra' is in no caption of ink@1; nothing was written"),
        (["--replace", "no-equals-sign"], "expected FIND=REPLACEMENT"),
        (["--replace", "=x"], "expected FIND=REPLACEMENT"),
        (["--set", "img9.png=x"], "ink@1 has no image 'img9.png'"),
        (["--prefix", " , "], "the leading tag is empty"),
        (["--unprefix", "zebra"], "no caption of ink@1 changed; nothing to save"),
        (["--set", "img0.png=a red fox"], "no caption of ink@1 changed; nothing to save"),
        (["ink@7"], "no version @7"),  # the registry's NotFound: exit 1
    ):
        name = "ink" if args[0].startswith("--") else args.pop(0)
        r = run_cli("data", "captions", name, *args)
        assert r.exit_code == (1 if name == "ink@7" else 2), (args, r.stdout)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree(styler_home / "datasets") == before


def test_leading_tags_and_trigger_words_are_whole_words():
    assert leading_tag_len("ink, a cat", "ink") == 5
    assert leading_tag_len("ink a cat", "ink") == 4
    assert leading_tag_len("ink", "ink") == 3
    assert leading_tag_len("inkwell on a desk", "ink") == 0
    assert mentions("米芾书法", "米芾") and mentions("mifu, 书法", "mifu")
    assert not mentions("pixel art", "pix")
    assert compose("a cat", prefix="pixel art", trigger="pix") == "pix, pixel art a cat"
    assert compose("a cat", prefix="书法", trigger="mifu") == "mifu, 书法 a cat"

    d = Dataset(name="x", version=1)
    draft = CaptionDraft(d, {"images": [{"file": "00001.png", "source": "a.png", "text": "ink, a cat", "split": "train"},
                                        {"file": "00002.png", "source": "b.png", "text": "", "split": "train"}]})
    assert draft.add_tag("ink") == 1 and draft.texts == ["ink, a cat", "ink"]
    assert draft.remove_tag("ink") == 2 and draft.texts == ["a cat", ""]
    assert draft.replace("a cat", "a  fox ") == 1 and draft.texts == ["a fox", ""]
    assert draft.changed == [0]
