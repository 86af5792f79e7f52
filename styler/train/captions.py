"""Captions as they train: shuffled tags, kept leading tags and caption dropout, per sample.

kohya sd-scripts semantics (read from kohya-ss/sd-scripts at commit
48d368fa557731ad0488c07304dfeba8c07910eb, library/train_util.py BaseDataset.process_caption;
styler's own code): dropout is decided first and makes the whole caption ""; otherwise, with
shuffle, the caption is split at commas into tags (each stripped), the first `keep_tokens` stay
where they are, the rest are shuffled, and the tags are joined again with ", ". Without shuffle
the caption trains as it is (kohya's keep_tokens only acts when shuffling). One difference:
empty tags (from ",," or a trailing comma) are dropped, where kohya keeps them as empty tags.

Every draw comes from a generator seeded by (seed, stream position), and a stream position is
unique in a run: each sample of each step gets its own shuffle and dropout, and a resumed or
data-parallel run draws the same ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEPARATOR = ","
_SALT = 0xC4  # keeps caption draws apart from the sample's other seeded draws


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(SEPARATOR) if t.strip()]


def shuffle_tags(text: str, keep_tokens: int, rng: random.Random) -> str:
    """The caption with its tags after the first `keep_tokens` in a random order."""
    tags = split_tags(text)
    head, tail = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


@dataclass(frozen=True)
class CaptionAugment:
    """What a run does to captions; `apply(text, position)` is deterministic from the seed."""

    shuffle: bool = False
    keep_tokens: int = 0
    dropout: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "CaptionAugment":
        return cls(cfg.shuffle_caption, cfg.keep_tokens, cfg.caption_dropout, cfg.seed)

    @property
    def active(self) -> bool:
        return self.shuffle or self.dropout > 0

    def apply(self, text: str, position: int) -> str:
        if not self.active:
            return text
        from .plan import mix_seed

        rng = random.Random(mix_seed(self.seed, position, _SALT))
        if self.dropout > 0 and rng.random() < self.dropout:
            return ""
        return shuffle_tags(text, self.keep_tokens, rng) if self.shuffle else text
