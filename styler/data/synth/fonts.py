"""CJK font discovery and loading for the calligraphy kind: which font file to use, and which of
our characters it really has glyphs for."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: Well-known CJK font files, brush-like (kai) first, then serif (ming/song), then sans.
KNOWN_CJK_FONTS = (
    "/usr/share/fonts/truetype/arphic/ukai.ttc",
    "/usr/share/fonts/truetype/arphic-ukai/ukai.ttc",
    "/usr/share/fonts/arphic-ukai/ukai.ttc",
    "/usr/share/fonts/TTF/ukai.ttc",
    "C:/Windows/Fonts/simkai.ttf",
    "/System/Library/Fonts/Supplemental/Kaiti.ttc",
    "/Library/Fonts/Kaiti.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/arphic-uming/uming.ttc",
    "/usr/share/fonts/arphic-uming/uming.ttc",
    "/usr/share/fonts/TTF/uming.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-serif-cjk-fonts/NotoSerifCJK-Regular.ttc",
    "/System/Library/Fonts/Supplemental/Songti.ttc",
    "/Library/Fonts/Songti.ttc",
    "C:/Windows/Fonts/simsun.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-sans-cjk-fonts/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)

# preference of fc-list results by (lower-cased) file name: a brush look first
_FONT_PREFERENCE = ("kai", "ukai", "ming", "song", "serif", "fangsong", "hei", "sans")


def _font_rank(path: str) -> tuple[int, str]:
    name = Path(path).name.lower()
    for rank, word in enumerate(_FONT_PREFERENCE):
        if word in name:
            return rank, path
    return len(_FONT_PREFERENCE), path


def _fc_list_fonts(timeout: float = 3.0) -> list[str]:
    """Font files fontconfig says cover Chinese; [] when fc-list is missing, slow or fails."""
    exe = shutil.which("fc-list")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, ":lang=zh", "file"], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    files = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip().rstrip(":").strip()
        if line.lower().endswith((".ttf", ".ttc", ".otf", ".otc")):
            files.add(line)
    return sorted(files, key=_font_rank)


def _packaged_fonts() -> list[str]:
    """Noto Serif/Sans CJK SC (SIL Open Font License 1.1) from the `mplfonts` package, which the
    `cjk` extra installs (`pip install 'styler[cjk]'`): found by path, never imported (it imports
    matplotlib)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("mplfonts")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "fonts"
    return [str(folder / name) for name in ("NotoSerifCJKsc-Regular.otf", "NotoSansCJKsc-Regular.otf")]


CJK_FONT_ENV = "STYLER_CJK_FONT"
CJK_FONT_HINT = ("install a CJK font (Debian/Ubuntu: apt install fonts-noto-cjk; Fedora: dnf install "
                 "google-noto-sans-cjk-fonts; macOS and Windows ship one; any system: pip install 'styler[cjk]') "
                 "or point STYLER_CJK_FONT at a .ttf/.ttc/.otf")


def find_cjk_font() -> Path | None:
    """The first usable CJK font: STYLER_CJK_FONT, then known locations, then ``fc-list :lang=zh``,
    preferring brush (kai) faces, then the `cjk` extra's Noto CJK; None when there is none. Never raises."""
    seen: set[str] = set()
    chosen = os.environ.get(CJK_FONT_ENV, "").strip()
    for candidate in (*([chosen] if chosen else []), *KNOWN_CJK_FONTS, *_fc_list_fonts(), *_packaged_fonts()):
        if candidate in seen:
            continue
        seen.add(candidate)
        path = Path(candidate)
        try:
            if not path.is_file():
                continue
            if _FontGlyphs.load(path).chars:
                return path
        except Exception:  # noqa: BLE001 - a probe: any broken font file is just skipped
            continue
    return None


# ~60 common characters, and a few two-character words (written top to bottom)
CHARACTERS = tuple(
    "永天地人山水风月花鸟龙福寿心道德春夏秋冬日云雨雪石木竹梅兰菊松海江河光明和静爱忍善美信义礼智仁勇志梦禅书画墨诗酒茶家安乐吉祥喜飞")
WORDS = ("山水", "风月", "春秋", "福寿", "天地", "日月", "花鸟", "道德", "书画", "吉祥",
         "松竹", "安乐", "明月", "江山", "静心", "和平", "飞龙", "梅花")


class _FontGlyphs:
    """A loaded font face plus which of our characters it really has (not the .notdef box)."""

    def __init__(self, path: Path, index: int, chars: tuple[str, ...], words: tuple[str, ...]):
        self.path, self.index, self.chars, self.words = path, index, chars, words

    @staticmethod
    @lru_cache(maxsize=8)
    def _load(path_text: str, mtime_ns: int) -> _FontGlyphs:
        path = Path(path_text)
        index = 0
        if path.suffix.lower() in (".ttc", ".otc"):  # collections: prefer the simplified-Chinese face
            for i in range(8):
                try:
                    family = ImageFont.truetype(path_text, 16, index=i).getname()[0] or ""
                except OSError:
                    break
                if any(tag in family for tag in (" CN", " SC", "GB", "Simplified")):
                    index = i
                    break
        face = ImageFont.truetype(path_text, 32, index=index)
        notdef = _glyph_pixels(face, "\uffff")
        have = tuple(c for c in CHARACTERS if _has_glyph(face, c, notdef))
        words = tuple(w for w in WORDS if all(_has_glyph(face, c, notdef) for c in w))
        return _FontGlyphs(path, index, have, words)

    @classmethod
    def load(cls, path: Path) -> _FontGlyphs:
        return cls._load(str(path), path.stat().st_mtime_ns)

    def face(self, px: int) -> ImageFont.FreeTypeFont:
        return _face(str(self.path), self.index, px)


def _glyph_pixels(face: ImageFont.FreeTypeFont, ch: str) -> bytes | None:
    """The rendered pixels of one character at 32 px; None when it draws nothing."""
    img = Image.new("L", (48, 48), 0)
    ImageDraw.Draw(img).text((4, 4), ch, font=face, fill=255)
    return img.tobytes() if img.getbbox() else None


def _has_glyph(face: ImageFont.FreeTypeFont, ch: str, notdef: bytes | None) -> bool:
    pixels = _glyph_pixels(face, ch)
    return pixels is not None and pixels != notdef


@lru_cache(maxsize=16)
def _face(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px, index=index)
