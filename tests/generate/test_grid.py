"""Labelled contact sheets: layout arithmetic, labels drawn, mixed image sizes, CJK fallback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from styler.data.synth.fonts import find_cjk_font
from styler.generate import grid
from styler.generate.grid import make_grid, make_strip, wrap_text

PALETTE = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 180, 20), (150, 50, 180), (20, 170, 170),
           (240, 120, 0), (120, 70, 20), (0, 90, 40), (250, 100, 180), (60, 30, 120), (160, 200, 40)]


def squares(rows: int, cols: int, size=(64, 64)) -> list[list[Image.Image]]:
    return [[Image.new("RGB", size, PALETTE[r * cols + c]) for c in range(cols)] for r in range(rows)]


def colour_box(sheet: Image.Image, colour) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the pixels close to ``colour``."""
    arr = np.asarray(sheet.convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.abs(arr - np.array(colour)).sum(-1) < 12)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def not_blank(sheet: Image.Image, box) -> bool:
    return np.asarray(sheet.convert("L").crop(box)).min() < 160


def test_cell_arithmetic_without_labels():
    sizes = {(r, c): make_grid(squares(r, c), row_labels=[], col_labels=[]).size
             for r in (1, 2, 3) for c in (1, 2, 3)}
    step_x = sizes[(1, 2)][0] - sizes[(1, 1)][0]
    step_y = sizes[(2, 1)][1] - sizes[(1, 1)][1]
    assert 64 + 2 <= step_x <= 64 + 8 and step_x == step_y  # cell plus a thin gap
    for (r, c), (w, h) in sizes.items():
        assert w == sizes[(1, 1)][0] + (c - 1) * step_x
        assert h == sizes[(1, 1)][1] + (r - 1) * step_y
    assert sizes[(1, 1)][0] - 64 <= 16  # thin margins


def test_cells_in_place_with_labels():
    sheet = make_grid(squares(3, 4), row_labels=["seed 1", "seed 2", "seed 3"],
                      col_labels=["guidance 3", "guidance 5", "guidance 7.5", "guidance 12"], title="sweep",
                      x_name="guidance", y_name="seed")
    boxes = [[colour_box(sheet, PALETTE[r * 4 + c]) for c in range(4)] for r in range(3)]
    for r in range(3):
        for c in range(4):
            x0, y0, x1, y1 = boxes[r][c]
            assert (x1 - x0, y1 - y0) == (64, 64)  # same-size images are pasted unscaled
            assert y0 == boxes[r][0][1] and x0 == boxes[0][c][0]
            if c:
                assert 2 <= x0 - boxes[r][c - 1][2] <= 8
            if r:
                assert 2 <= y0 - boxes[r - 1][c][3] <= 8
    first_x, first_y = boxes[0][0][:2]
    assert first_x > 40 and first_y > 40  # room for the row labels and header
    assert sheet.getpixel((sheet.width - 2, sheet.height - 2)) == (255, 255, 255)
    # labels drawn: the header above each column and the band left of each row hold dark pixels
    for c in range(4):
        x0, _, x1, _ = boxes[0][c]
        assert not_blank(sheet, (x0, first_y - 20, x1, first_y))
    for r in range(3):
        _, y0, _, y1 = boxes[r][0]
        assert not_blank(sheet, (0, y0, first_x, y1))
    assert not_blank(sheet, (0, 0, sheet.width, 20))  # the title


def test_labels_make_room():
    plain = make_grid(squares(2, 2), row_labels=[], col_labels=[])
    labelled = make_grid(squares(2, 2), row_labels=["a", "b"], col_labels=["c", "d"])
    titled = make_grid(squares(2, 2), row_labels=["a", "b"], col_labels=["c", "d"], title="t")
    assert labelled.width > plain.width and labelled.height > plain.height
    assert titled.width == labelled.width and titled.height > labelled.height


def test_mixed_sizes_fit_keeping_aspect():
    images = [[Image.new("RGB", (64, 64), PALETTE[0]), Image.new("RGB", (128, 32), PALETTE[1]),
               Image.new("RGB", (20, 80), PALETTE[2])]]
    sheet = make_grid(images, row_labels=["r"], col_labels=["square", "wide", "tall"])
    sizes = [colour_box(sheet, PALETTE[i]) for i in range(3)]
    dims = [(b[2] - b[0], b[3] - b[1]) for b in sizes]
    assert dims == [(80, 80), (128, 32), (20, 80)]  # cell is 128x80; each image scaled to fit, aspect kept
    # all centred on the same row centre
    centres = {(b[1] + b[3]) // 2 for b in sizes}
    assert max(centres) - min(centres) <= 1


def test_modes_and_placeholders():
    images = [[Image.new("RGBA", (32, 32), (255, 0, 0, 255)), Image.new("L", (32, 32), 30)],
              [Image.new("P", (32, 32)), None]]
    sheet = make_grid(images, row_labels=["x", "y"], col_labels=["1", "2"])
    assert sheet.mode == "RGB"
    assert colour_box(sheet, grid.PLACEHOLDER) is not None
    ragged = make_grid([[Image.new("RGB", (32, 32))] * 3, [Image.new("RGB", (32, 32))]],
                       row_labels=["a", "b"], col_labels=["1", "2", "3"])
    full = make_grid(squares(2, 3, (32, 32)), row_labels=["a", "b"], col_labels=["1", "2", "3"])
    assert ragged.size == full.size


def test_label_count_mismatch():
    with pytest.raises(ValueError, match="column labels"):
        make_grid(squares(2, 2), row_labels=["a", "b"], col_labels=["1"])
    with pytest.raises(ValueError, match="row labels"):
        make_grid(squares(2, 2), row_labels=["a"], col_labels=["1", "2"])
    with pytest.raises(ValueError):
        make_grid([], row_labels=[], col_labels=[])


def test_wrap_and_ellipsize():
    font = ImageFont.load_default(size=14)
    lines = wrap_text("guidance 12 with a rather long label that must wrap", font, 80, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 80 for line in lines)
    assert wrap_text("short", font, 80, 3) == ["short"]
    assert all(font.getlength(line) <= 40 for line in wrap_text("supercalifragilistic", font, 40, 5))
    assert len(wrap_text("书法书法书法书法书法书法", font, 40, 2)) == 2


def test_chinese_label_without_cjk_font(monkeypatch, capsys):
    monkeypatch.setattr(grid, "find_cjk_font", lambda: None)
    monkeypatch.setattr(grid, "_warned_no_cjk", False)
    sheet = make_grid(squares(1, 2), row_labels=["书法 0.5"], col_labels=["永", "seed 1"], title="书法")
    box = colour_box(sheet, PALETTE[0])
    assert not_blank(sheet, (0, box[1], box[0], box[3]))
    make_grid(squares(1, 2), row_labels=["永"])
    err = capsys.readouterr().err
    # said once per process, with the fix, not silently drawn as boxes
    assert err.count("no CJK font found") == 1 and "fonts-noto-cjk" in err and "STYLER_CJK_FONT" in err
    make_grid(squares(1, 2), row_labels=["latin only"])
    assert capsys.readouterr().err == ""


def test_styler_cjk_font_points_at_a_font(monkeypatch, tmp_path):
    from styler.data.synth import fonts

    monkeypatch.setattr(fonts, "KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(fonts, "_fc_list_fonts", lambda timeout=3.0: [])
    monkeypatch.setattr(fonts, "_packaged_fonts", lambda: [])
    monkeypatch.setenv("STYLER_CJK_FONT", str(tmp_path / "missing.ttf"))
    assert fonts.find_cjk_font() is None  # a path that is not a font is skipped, never raised


@pytest.mark.skipif(find_cjk_font() is None, reason="no CJK font on this machine")
def test_chinese_label_with_cjk_font():
    sheet = make_grid(squares(1, 1), row_labels=["书法"], col_labels=["永"])
    box = colour_box(sheet, PALETTE[0])
    assert not_blank(sheet, (0, box[1], box[0], box[3]))
    assert not_blank(sheet, (box[0], 0, box[2], box[1]))


def test_font_scales_with_cell_and_has_a_floor():
    small = make_grid(squares(1, 1, (32, 32)), row_labels=["seed 1"], col_labels=["guidance 7.5"])
    large = make_grid(squares(1, 1, (512, 512)), row_labels=["seed 1"], col_labels=["guidance 7.5"])
    header = lambda im, side: colour_box(im, PALETTE[0])[1]  # noqa: E731 - header height above the cell
    assert header(small, 32) >= 12 + 8  # at least one 12 px line
    assert header(large, 512) > header(small, 32)


def test_strip():
    images = [Image.new("RGB", (48, 48), PALETTE[i]) for i in range(5)]
    labels = [f"anime {1 - i / 4:.1f} / watercolor {i / 4:.1f}" for i in range(5)]
    strip = make_strip(images, labels, title="interpolation")
    boxes = [colour_box(strip, PALETTE[i]) for i in range(5)]
    assert all(b[3] - b[1] == 48 for b in boxes)
    assert len({b[1] for b in boxes}) == 1 and boxes[0][0] < 16  # one row, no row-label column
    assert not_blank(strip, (boxes[0][0], 0, boxes[0][2], boxes[0][1]))
