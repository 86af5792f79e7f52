"""A CLIP-format byte-level BPE tokenizer for the tiny base, learned from a built-in corpus.

The files match what Stable Diffusion 1.5 ships in its `tokenizer/` folder (vocab.json,
merges.txt, special_tokens_map.json, tokenizer_config.json), so transformers'
`CLIPTokenizer.from_pretrained(folder)` loads them like a real model's. The vocabulary is the
256 byte-level symbols (GPT-2's byte-to-unicode table), the same 256 with the end-of-word
marker `</w>`, one token per learned merge, then `<|startoftext|>` and `<|endoftext|>`.
Merges come from a small, deterministic BPE trainer over English style/art words and common
Chinese characters, so "书法 永" becomes a few known tokens; any other text still encodes
byte by byte, never to unk. Same code, same bytes.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END = "</w>"
MODEL_MAX_LENGTH = 77
MAX_MERGES = 2100

_ENGLISH = """
a an the of in on at with and or by for to from as is style photo photograph picture image art
artwork drawing painting painted paint sketch illustration render rendering portrait landscape
still life closeup close up detailed high quality masterpiece best beautiful simple minimal
watercolor watercolour oil acrylic ink gouache pastel charcoal pencil crayon chalk digital
pixel art 8bit 16bit sprite retro anime manga cartoon comic chibi cel shading lineart line lines
calligraphy brush stroke strokes script character characters chinese japanese seal cursive
regular running clerk style of master masters era period impressionism impressionist cubism
surrealism baroque renaissance ukiyo woodblock print poster flat vector 3d cinematic lighting
soft hard light dark shadow bright sunset sunrise night day morning evening fog mist rain snow
red orange yellow green blue purple violet pink brown black white gray grey gold silver teal
cyan magenta colorful monochrome pale vivid warm cool pastel neon
cat dog bird fish horse dragon tiger rabbit flower flowers tree trees mountain mountains river
lake sea ocean sky cloud clouds moon sun star stars city street house castle temple bridge boat
ship car train girl boy woman man person people face hand hands eye eyes hair dress robot
forest garden field grass leaf leaves rock stone water fire paper scroll wall window door
table chair cup bowl apple fruit bamboo plum orchid chrysanthemum lotus pine crane
sks token concept subject object background foreground texture pattern border frame
circle square triangle cross shape shapes colors colours striped stripes flat plain
"""

_PHRASES = [
    "a photo of", "a painting of", "a drawing of", "a picture of", "in the style of",
    "pixel art", "oil painting", "watercolor painting", "ink wash painting", "anime style",
    "chinese calligraphy", "high quality", "a photo of a cat", "a painting of a dog",
]

# Common Chinese characters (a few hundred; calligraphy practice favourites first).
_CHINESE = (
    "书法永天地人山水风月花鸟龙福寿心道德一二三四五六七八九十百千万上下左右中大小多少"
    "日年月时分春夏秋冬东西南北金木火土石田云雨雪电江河湖海林森草竹梅兰菊松柏桃李"
    "马牛羊鱼虫犬猫鹤凤虎龟家国王主臣民君子父母兄弟姐妹夫妻儿女老少男友师生学文字画"
    "诗词歌赋言语说话读写看见听闻知识思想意志情爱恨喜怒哀乐忧愁安宁静动行走来去出入"
    "开关门户窗室堂宫殿楼台亭阁寺庙城市村乡路桥车船舟飞高低长短远近深浅新旧古今明暗"
    "清浊黑白红黄青绿蓝紫光影声色香味美好善恶真假是非有无生死名利正气神灵仙佛经典"
    "和平春江秋水无边落木萧萧下不尽长江滚滚来白日依山尽黄河入海流欲穷千里目更上一层"
    "之乎者也而其所以为于此彼我你他她它们的了在得着过这那哪谁何如若则虽然因故且又"
    "以及与同共和合分别各每全半都也还只就才再已经曾将要会能可应该必须需求请让使叫把被"
    "从向往对给跟比像按照根据关于至到里外内前后旁边间面头身手足口目耳鼻眉发肉骨血气"
    "力体病医药食饭茶酒衣服帽鞋巾布丝纸笔墨砚印章刀剑弓箭琴棋书画诗酒花茶"
    "楷行草隶篆碑帖临摹笔画横竖撇捺点钩提折"
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, codes)}


# The same splitting CLIPTokenizer applies before BPE (after NFC, whitespace squeeze, lowercase).
_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _SPLIT.findall(" ".join(text.lower().split()))


def corpus() -> Counter:
    """Word frequencies of the built-in training corpus (deterministic)."""
    counts: Counter = Counter()
    english = _ENGLISH.split()
    for i, word in enumerate(english):
        counts.update(_words(word) * (1 + (len(english) - i) % 5))
    for phrase in _PHRASES:
        counts.update(_words(phrase) * 3)
    chars = list(dict.fromkeys(_CHINESE))  # unique, order kept
    for i, ch in enumerate(chars):
        counts[ch] += 2 + (len(chars) - i) // 60  # alone: learns the word-final form
        counts[ch + chars[(i * 7 + 1) % len(chars)]] += 1  # first in a run: the inner form
    counts["书法"] += 20
    return counts


def train_merges(counts: Counter, max_merges: int = MAX_MERGES) -> list[tuple[str, str]]:
    """Learn BPE merges over byte-level symbols; ties broken by the pair's text, so the
    result depends on the corpus only."""
    table = bytes_to_unicode()
    words: list[list[str]] = []
    freqs: list[int] = []
    for word in sorted(counts):
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += END
        words.append(symbols)
        freqs.append(counts[word])

    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for idx, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[idx]
            where.setdefault(pair, set()).add(idx)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale entry
        merges.append(pair)
        joined = pair[0] + pair[1]
        touched: set[tuple[str, str]] = set()
        for idx in sorted(where.pop(pair, ())):
            symbols, f = words[idx], freqs[idx]
            for old in zip(symbols, symbols[1:]):
                pair_counts[old] -= f
                touched.add(old)
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[idx] = merged
            for new in zip(merged, merged[1:]):
                pair_counts[new] += f
                where.setdefault(new, set()).add(idx)
                touched.add(new)
        pair_counts.pop(pair, None)
        for p in sorted(touched):
            if p != pair and pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return merges


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The tiny tokenizer's vocabulary (token -> id) and merges, in rank order."""
    base = list(bytes_to_unicode().values())
    tokens = base + [s + END for s in base]
    merges = train_merges(corpus())
    seen = set(tokens)
    for a, b in merges:
        tok = a + b
        if tok not in seen:
            tokens.append(tok)
            seen.add(tok)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, tuple(merges)


def vocab_size() -> int:
    return len(vocab_and_merges()[0])


def special_ids() -> dict[str, int]:
    vocab = vocab_and_merges()[0]
    return {"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}


def _dump(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def write_tokenizer(folder: str | Path) -> Path:
    """Write the four CLIP tokenizer files into `folder` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    special = {
        "bos_token": {"content": BOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "pad_token": EOS,
        "unk_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_input_names": ["input_ids", "attention_mask"],
        "added_tokens_decoder": {
            str(vocab[BOS]): {"content": BOS, "lstrip": False, "normalized": True, "rstrip": False,
                              "single_word": False, "special": True},
            str(vocab[EOS]): {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False,
                              "single_word": False, "special": True},
        },
    }
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", "utf-8")
    (folder / "special_tokens_map.json").write_text(_dump(special), "utf-8")
    (folder / "tokenizer_config.json").write_text(_dump(config), "utf-8")
    return folder
