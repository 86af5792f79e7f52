"""The sweep's prompts name neither style more than the other: both datasets' captions without
their style tags, with both triggers (see styler/eval/sweep.py `_prompts` for what it measured)."""

from __future__ import annotations

from types import SimpleNamespace

from styler.eval import run, sweep


def test_style_tags_are_the_tags_nearly_every_caption_has():
    captions = [f"wtrc, a {c} circle on a white background, watercolor painting" for c in ("red", "blue", "green")]
    captions.append("wtrc, a red square on a blue background, watercolor painting, soft")
    assert sweep.style_tags(captions) == {"wtrc", "watercolor painting"}
    assert sweep.style_tags(captions[:1]) == set()  # one caption says nothing about what is constant


def _two_adapters(monkeypatch, trigger_last: bool):
    """Adapters a (mifu, calligraphy) and b (wtrc, watercolor) whose datasets' captions have the
    trigger in front, or at the end; returns them and the captions (which the test may change)."""
    a = SimpleNamespace(trigger="mifu", name="a")
    b = SimpleNamespace(trigger="wtrc", name="b")

    def cap(trigger, body):
        return f"{body}, {trigger}" if trigger_last else f"{trigger}, {body}"

    captions = {
        "a": [cap("mifu", f"a {c} triangle on a white background, 书法 ink brush") for c in ("red", "black")],
        "b": [cap("wtrc", f"a {c} square on an orange background, watercolor painting") for c in ("green", "blue")],
    }
    monkeypatch.setattr(run, "adapter_captions", lambda x, reg: captions[x.name])
    return a, b, captions


def test_sweep_prompts_keep_the_content_drop_both_styles_and_carry_both_triggers(monkeypatch):
    a, b, captions = _two_adapters(monkeypatch, trigger_last=False)
    prompts = sweep._prompts(a, b, None, 5)
    assert prompts == ["mifu, wtrc, a red triangle on a white background",
                       "mifu, wtrc, a green square on an orange background",
                       "mifu, wtrc, a black triangle on a white background",
                       "mifu, wtrc, a blue square on an orange background",
                       "mifu, wtrc, a red triangle on a white background"]
    captions["a"] = ["mifu, 书法 ink brush"] * 2  # all style tags: it keeps its style words
    assert sweep._prompts(a, b, None, 1) == ["mifu, wtrc, 书法 ink brush"]


def test_sweep_prompts_put_the_triggers_last_where_the_captions_have_them_last(monkeypatch):
    """The built-in world's captions end with the trigger (world.caption): so do the sweep's prompts."""
    a, b, _ = _two_adapters(monkeypatch, trigger_last=True)
    assert sweep._prompts(a, b, None, 2) == ["a red triangle on a white background, mifu, wtrc",
                                             "a green square on an orange background, mifu, wtrc"]


def test_a_constant_share_has_no_spearman_and_says_so():
    rho = sweep.spearman([0, 0.5, 1], [0.0, 0.0, 0.0])
    assert sweep.rho_text(rho) == "undefined (the share is the same at every weight)"
    assert sweep.rho_text(sweep.spearman([0, 0.5, 1], [1.0, 0.5, 0.0])) == "-1.00"
