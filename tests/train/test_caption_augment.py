"""--shuffle-caption, --keep-tokens and --caption-dropout over many draws (kohya sd-scripts'
semantics, checked against its process_caption at 48d368fa557731ad0488c07304dfeba8c07910eb)."""

from __future__ import annotations

import math
from collections import Counter

from styler.train.captions import CaptionAugment, split_tags

CAPTION = "mifu_style, ink,  brush ,paper"
DRAWS = 3000


def test_shuffle_keeps_the_first_tags_and_draws_every_order_evenly():
    aug = CaptionAugment(shuffle=True, keep_tokens=1, seed=7)
    out = [aug.apply(CAPTION, p) for p in range(DRAWS)]
    assert all(t.startswith("mifu_style, ") for t in out)
    assert all(sorted(split_tags(t)) == sorted(split_tags(CAPTION)) for t in out)  # tags moved, none lost
    orders = Counter(out)
    assert len(orders) == math.factorial(3)  # every order of the three free tags
    expected = DRAWS / 6
    assert all(abs(n - expected) < 5 * math.sqrt(expected) for n in orders.values()), orders
    two = CaptionAugment(shuffle=True, keep_tokens=2, seed=7)
    assert {tuple(split_tags(two.apply(CAPTION, p))[:2]) for p in range(200)} == {("mifu_style", "ink")}
    assert {split_tags(CaptionAugment(shuffle=True, seed=7).apply(CAPTION, p))[0] for p in range(200)} == {
        "mifu_style", "ink", "brush", "paper"}  # without --keep-tokens the trigger moves too
    # more tags kept than the caption has: nothing moves
    assert {CaptionAugment(shuffle=True, keep_tokens=9).apply(CAPTION, p) for p in range(50)} == {
        "mifu_style, ink, brush, paper"}


def test_without_shuffle_the_caption_trains_as_it_is():
    aug = CaptionAugment(shuffle=False, keep_tokens=2, seed=1)
    assert {aug.apply(CAPTION, p) for p in range(100)} == {CAPTION}


def test_dropout_empties_whole_captions_at_its_rate():
    for p_drop in (0.0, 0.1, 0.5, 1.0):
        aug = CaptionAugment(dropout=p_drop, seed=3)
        out = [aug.apply(CAPTION, p) for p in range(DRAWS)]
        dropped = sum(t == "" for t in out)
        assert all(t in ("", CAPTION) for t in out)  # the whole caption or nothing
        sd = math.sqrt(DRAWS * p_drop * (1 - p_drop))
        assert abs(dropped - DRAWS * p_drop) <= 5 * sd + 1e-9, (p_drop, dropped)
    both = CaptionAugment(shuffle=True, keep_tokens=1, dropout=0.3, seed=3)
    out = [both.apply(CAPTION, p) for p in range(DRAWS)]
    kept = [t for t in out if t]
    assert abs(len(kept) / DRAWS - 0.7) < 0.05 and len(set(kept)) == 6


def test_draws_are_fixed_by_seed_and_position():
    a, b = CaptionAugment(True, 1, 0.2, seed=11), CaptionAugment(True, 1, 0.2, seed=11)
    positions = [5, 0, 99, 5, 12345]
    assert [a.apply(CAPTION, p) for p in positions] == [b.apply(CAPTION, p) for p in positions]
    other = CaptionAugment(True, 1, 0.2, seed=12)
    assert [a.apply(CAPTION, p) for p in range(100)] != [other.apply(CAPTION, p) for p in range(100)]
