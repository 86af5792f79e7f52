"""``pixel``: pixel-art sprites on a 16x16 grid with a 4-8 colour palette, scaled up with nearest
neighbour (hard edges, very few distinct colours)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# 16x16 sprites; '.' background, 'o' outline, a-e fill roles. Sprites given as 8-column halves
# are mirrored (symmetric); an 'o' outline is also added automatically around the silhouette.
_HALF = {
    "mushroom": [
        "........", ".....ooo", "...ooaaa", "..oaacca", ".oaaacca", ".oacaaaa", "oaccaaaa", "oaccaaac",
        "oaaaaaac", ".ooooooo", "....obbb", "....obbb", "....obbd", "....obbd", ".....ooo", "........"],
    "house": [
        "........", ".......o", "......oa", ".....oaa", "....oaaa", "...oaaaa", "..oaaaaa", ".ooooooo",
        "..obbbbb", "..obccbb", "..obccbb", "..obbbbd", "..obbbbd", "..obbbbd", "..oooooo", "........"],
    "tree": [
        "........", "......oo", "....ooaa", "...oaaca", "..oaacaa", "..oaaaaa", ".oaacaaa", ".oaaaaaa",
        ".oaaaaac", "..oaacaa", "...ooaaa", ".....oob", "......ob", "......ob", ".....obb", "........"],
    "cat": [
        "........", ".oo.....", ".obo....", ".obbo...", ".oaaaooo", ".oaaaaaa", "oaaaaaaa", "oaacoaaa",
        "oaacoaaa", "oaaaaaad", "oaaaaaoo", ".oaaaaaa", "..oaaaaa", "...ooooo", "........", "........"],
    "castle": [
        "...d....", "..ddd...", ".ddddd..", ".aaaaa..", ".aacaa..", ".aaaaa.a", ".aaaaaaa", ".aaaaaaa",
        ".aacaaaa", ".aaaeaaa", ".aaaaaaa", ".aaaaabb", ".aeaaabb", ".aaaaabb", ".aaaaabb", "........"],
    "potion": [
        "........", "......bb", "......bb", "......cc", "......cc", "....cccc", "...caaaa", "..caaaaa",
        "..cdaaaa", "..cdaaaa", "..caaaaa", "..caaaaa", "...caaaa", "....cccc", "........", "........"],
    "ghost": [
        "........", "........", ".....aaa", "...aaaaa", "..aaaaaa", "..aaaaaa", ".aabbaaa", ".aabbaaa",
        ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aa.aaa.", ".a...a..", "........"],
    "flower": [
        "........", ".....aaa", "....aaaa", "...aaaaa", "...aaaab", "....aabb", ".....abb", "......cc",
        "..dd..oc", "..ddd.oc", "...dddoc", "....ddoc", "......oc", "......oc", "........", "........"],
}
_FULL = {
    "heart": [
        "................", "..oooo....oooo..", ".oaaaao..oaaaao.", "oaccaaaooaaaaaao", "oaccaaaaaaaaaaao",
        "oacaaaaaaaaaaaao", "oaaaaaaaaaaaaaao", ".oaaaaaaaaaaaao.", "..oaaaaaaaaaao..", "...oaaaaaaaao...",
        "....oaaaaaao....", ".....oaaaao.....", "......oaao......", ".......oo.......", "................",
        "................"],
}

# name → RGB; the caption names the colour of each sprite's role 'a'
_COLOURS = {
    "red": (214, 48, 49), "blue": (52, 101, 214), "green": (46, 160, 67), "yellow": (247, 201, 40),
    "purple": (142, 68, 173), "orange": (240, 128, 32), "pink": (240, 120, 170), "teal": (22, 160, 150),
    "brown": (139, 90, 43), "white": (240, 240, 236), "grey": (128, 132, 140), "gold": (230, 180, 40),
}
_SUBJECTS = {
    # subject: (choices for role a, fixed colours for other roles, ground?)
    "mushroom": (("red", "blue", "purple", "orange", "brown"), {"b": (238, 222, 190), "c": (250, 250, 245), "d": (200, 180, 150)}, True),
    "house": (("red", "blue", "brown", "purple", "teal"), {"b": (236, 214, 160), "c": (120, 190, 240), "d": (120, 72, 36)}, True),
    "tree": (("green", "orange", "pink", "teal"), {"b": (120, 76, 40), "c": None}, True),
    "cat": (("orange", "grey", "white", "brown"), {"b": (240, 150, 170), "c": (90, 200, 90), "d": (230, 110, 140)}, False),
    "castle": (("grey", "brown", "white"), {"b": (90, 56, 30), "c": (40, 40, 60), "d": (200, 50, 60), "e": None}, True),
    "potion": (("red", "blue", "green", "purple", "pink"), {"b": (150, 100, 60), "c": (200, 230, 240), "d": (255, 255, 255)}, False),
    "ghost": (("white", "teal", "pink", "grey"), {"b": (30, 30, 40)}, False),
    "flower": (("red", "pink", "yellow", "purple", "blue", "orange"), {"b": (250, 220, 60), "c": (46, 140, 60), "d": (70, 180, 80)}, True),
    "heart": (("red", "pink", "purple"), {"c": (255, 255, 255)}, False),
    "sword": (("grey", "gold", "teal"), {"b": (120, 76, 40), "c": (200, 206, 216), "d": (250, 250, 255)}, False),
    "monster": (("green", "purple", "red", "blue", "orange", "teal"), {"b": (255, 255, 255)}, False),
}
_SKIES = ((160, 210, 245), (250, 240, 210), (40, 44, 80), (215, 235, 215), (230, 225, 245), (60, 30, 70), (255, 255, 255))
_GROUNDS = ((90, 170, 70), (200, 170, 110), (110, 110, 120), (70, 130, 60))


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(c * f), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _sprite(subject: str, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 array of role characters."""
    if subject in _HALF:
        rows = [r + r[::-1] for r in _HALF[subject]]
    elif subject in _FULL:
        rows = list(_FULL[subject])
    elif subject == "sword":
        g = np.full((16, 16), ".")
        for r in range(1, 10):
            g[r, 15 - r] = "c"
            if 16 - r <= 15 and r >= 2:
                g[r, 16 - r] = "d"
        for c in range(3, 8):
            g[c + 5, c] = "a"
        for r, c in ((11, 4), (12, 3), (13, 2)):
            g[r, c] = "b"
        g[14, 1] = "a"
        rows = ["".join(r) for r in g]
    else:  # monster: a random symmetric space-invader-like creature
        half = (rng.random((9, 5)) < 0.55)
        half[2:5, 4] = True  # solid middle
        body = np.concatenate([half, half[:, ::-1][:, 1:]], axis=1)  # 9 x 9
        g = np.full((16, 16), ".")
        g[4:13, 3:12][body] = "a"
        eye = int(rng.integers(3, 6))
        g[eye + 1, 5] = g[eye + 1, 9] = "b"
        rows = ["".join(r) for r in g]
    g = np.array([list(r) for r in rows])
    assert g.shape == (16, 16), subject
    return g


def _outline(g: np.ndarray) -> np.ndarray:
    filled = g != "."
    pad = np.pad(filled, 1)
    near = pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
    out = g.copy()
    out[~filled & near] = "o"
    return out


def render(rng: np.random.Generator, s: int) -> tuple[Image.Image, str]:
    subject = list(_SUBJECTS)[int(rng.integers(len(_SUBJECTS)))]
    choices, fixed, grounded = _SUBJECTS[subject]
    colour_name = choices[int(rng.integers(len(choices)))]
    g = _outline(_sprite(subject, rng))
    if subject in ("sword",) and rng.random() < 0.5:
        g = g[:, ::-1]
    # nudge by one cell where the border allows it
    filled_rows = np.where((g != ".").any(axis=1))[0]
    filled_cols = np.where((g != ".").any(axis=0))[0]
    dy = int(rng.integers(-1, 2))
    dx = int(rng.integers(-1, 2))
    if filled_rows.min() + dy < 0 or filled_rows.max() + dy > 15:
        dy = 0
    if filled_cols.min() + dx < 0 or filled_cols.max() + dx > 15:
        dx = 0
    g = np.roll(g, (dy, dx), axis=(0, 1))

    main = _COLOURS[colour_name]
    sky = _SKIES[int(rng.integers(len(_SKIES)))]
    if sky == main or (colour_name == "white" and sum(sky) > 600):
        sky = _SKIES[2]
    palette = {".": sky, "a": main}
    dark_bg = sum(sky) < 300
    palette["o"] = (20, 18, 28) if not dark_bg else (8, 6, 12)
    for role, rgb in fixed.items():
        if rgb is None:  # derived shade of the main colour
            rgb = _shade(main, 1.25 if role == "c" else 0.8)
        palette[role] = rgb
    grid = np.zeros((16, 16, 3), np.uint8)
    for role, rgb in palette.items():
        grid[g == role] = rgb
    if grounded and rng.random() < 0.75:
        ground = _GROUNDS[int(rng.integers(len(_GROUNDS)))]
        lowest = int(np.where((g != ".").any(axis=1))[0].max())
        gr = min(15, lowest)
        mask = (g == ".")
        mask[:gr, :] = False
        grid[mask] = ground
    elif rng.random() < 0.35:  # a few background stars/sparkles
        for _ in range(int(rng.integers(2, 6))):
            r, c = rng.integers(0, 16, 2)
            if g[r, c] == ".":
                grid[r, c] = _shade(sky, 0.8) if not dark_bg else (250, 240, 160)
    img = Image.fromarray(grid).resize((s, s), Image.Resampling.NEAREST)
    article = "an" if colour_name[0] in "aeiou" else "a"
    return img, f"pixel art, {article} {colour_name} {subject}"
