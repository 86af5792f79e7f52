"""Multi-vector textual-inversion tokens in prompts, as diffusers does them.

diffusers' `load_textual_inversion` adds an n-vector embedding as the words `token`, `token_1`, …,
`token_{n-1}`, and its pipelines rewrite a prompt's `token` into "token token_1 … token_{n-1}"
(`TextualInversionLoaderMixin.maybe_convert_prompt`), so the text encoder sees all n vectors.
`expand` does that rewrite for styler's training captions and renders, with two differences from
diffusers' `str.replace`: an occurrence already followed by its `_1 …` words is rewritten once, not
again (diffusers turns "t t_1" into "t t_1 t_1_1 …"), and with a lowercasing tokenizer (CLIP's) the
token is found in any case, as the tokenizer itself matches it (diffusers then misses a token that
has capitals, and the text encoder gets vector 0 alone).
"""

from __future__ import annotations

import re


def tokens_for(token: str, n: int) -> list[str]:
    """The words of an n-vector embedding: token, token_1, …, token_{n-1}."""
    return [token] + [f"{token}_{i}" for i in range(1, int(n))]


def lowercases(tokenizer) -> bool:
    """Whether the tokenizer ignores case (CLIP's lowercases everything before matching)."""
    try:
        return tokenizer.tokenize("Q") == tokenizer.tokenize("q")
    except Exception:  # an unusual tokenizer: match case exactly
        return False


def expand(text: str, vectors: dict[str, int], *, ignore_case: bool = False) -> str:
    """Every occurrence of each token (with any `_i` words already after it) as all its n words."""
    for token, n in sorted(vectors.items(), key=lambda kv: -len(kv[0])):  # longer tokens first
        if n < 1:
            continue
        t = re.escape(token)
        pattern = re.compile(rf"{t}(?:\s+{t}_\d+)*(?!_\d)", re.IGNORECASE if ignore_case else 0)
        words = " ".join(tokens_for(token, n))
        text = pattern.sub(lambda _m: words, text)
    return text


def has_token(text: str, token: str, *, ignore_case: bool = False) -> bool:
    return re.search(rf"{re.escape(token)}(?!_\d)", text, re.IGNORECASE if ignore_case else 0) is not None


def caption(text: str, token: str, n: int, *, ignore_case: bool = False) -> str:
    """A training caption with all n words of the token: where the caption names the token it is
    expanded in place; a caption without it gets the words in front ("t t_1, caption")."""
    if has_token(text, token, ignore_case=ignore_case):
        return expand(text, {token: n}, ignore_case=ignore_case)
    words = " ".join(tokens_for(token, n))
    return f"{words}, {text}" if text else words


def install(pipe, vectors: dict[str, int]) -> None:
    """Make `pipe` (and whatever encodes prompts through it) expand these tokens: its
    `maybe_convert_prompt`, which diffusers' `encode_prompt` calls on the prompt and the negative
    prompt, becomes `expand`. `vectors` is read at each call, so tokens loaded later count too."""

    def convert(prompt, tokenizer):
        ignore = lowercases(tokenizer)
        if isinstance(prompt, (list, tuple)):
            return [expand(p, vectors, ignore_case=ignore) for p in prompt]
        return expand(prompt, vectors, ignore_case=ignore)

    pipe.maybe_convert_prompt = convert
