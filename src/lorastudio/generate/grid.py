"""Drawing comparison grids: cells in rows and columns, axis labels on top and left.

The layout is plain arithmetic so callers (and tests) can find any cell in the picture:
`GridLayout.cell_box(column, row)`. Labels are wrapped to their band; a long one is drawn in
a smaller font (as A1111 does) and, when even that runs out of lines, ends in an ellipsis. Chinese
labels need a CJK font (generate/fonts.py finds one).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from lorastudio.generate.fonts import fit_lines, line_height, load_font, text_width, wrap_text

__all__ = ["GridLayout", "draw_grid", "fit_label", "label_font_size", "stack_grids", "wrap_text"]

BACKGROUND = "white"
TEXT = "black"
CAPTION = (60, 60, 60)
MAX_CAPTION_LINES = 2
MAX_LABEL_LINES = 4  # a column or Z label; a row label has its cell's height
MIN_LABEL_SIZE = 8


def label_font_size(cell_w: int, cell_h: int) -> int:
    """About A1111's size ((w + h) / 25), but never too small to read on tiny cells."""
    return max(12, min(48, (cell_w + cell_h) // 25))


@dataclass(frozen=True)
class Label:
    """A label's lines and the font they fit in (smaller than the grid's for a long label)."""

    font: object
    lines: list[str]

    @property
    def height(self) -> int:
        return line_height(self.font) * len(self.lines) if any(self.lines) else 0


def fit_label(text: str, width: int, size: int, max_lines: int, max_height: int | None = None) -> Label:
    """`text` in at most `max_lines` lines of `width` pixels: the font shrinks for a long label, and
    the last line ends in an ellipsis when even the smallest runs out of lines."""
    font, lines = fit_lines(text, width, size, max_lines, min(size, MIN_LABEL_SIZE), max_height)
    return Label(font, lines)


def _draw_label(
    draw: ImageDraw.ImageDraw, label: Label, x0: int, width: int, y0: int, fill, centre: bool = True
) -> None:
    """The label's lines from `y0` down, each centred in the `width` pixels from `x0` (or from its left)."""
    step = line_height(label.font)
    for n, line in enumerate(label.lines):
        x = x0 + (width - text_width(label.font, line)) // 2 if centre else x0
        draw.text((x, y0 + n * step), line, fill=fill, font=label.font)


@dataclass(frozen=True)
class GridLayout:
    """Where everything is: label bands, cell size, caption strip under each cell, gaps."""

    columns: int
    rows: int
    cell_w: int
    cell_h: int
    left: int  # width of the row-label band
    top: int  # height of the column-label band
    caption_h: int  # strip under each cell for its caption (0 when there are none)
    margin: int  # gap between cells

    @property
    def size(self) -> tuple[int, int]:
        width = self.left + self.columns * self.cell_w + (self.columns - 1) * self.margin
        height = self.top + self.rows * (self.cell_h + self.caption_h) + (self.rows - 1) * self.margin
        return width, height

    def cell_box(self, column: int, row: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the image of a cell."""
        x = self.left + column * (self.cell_w + self.margin)
        y = self.top + row * (self.cell_h + self.caption_h + self.margin)
        return x, y, x + self.cell_w, y + self.cell_h


def draw_grid(
    cells: list[Image.Image | None],
    columns: int,
    x_labels: list[str],
    y_labels: list[str],
    captions: list[str | None] | None = None,
    margin: int = 0,
    draw_legend: bool = True,
) -> tuple[Image.Image, GridLayout]:
    """Cells row by row (`columns` per row) with labels; a missing cell stays blank."""
    rows = max(1, -(-len(cells) // columns))
    sizes = [c.size for c in cells if c is not None] or [(64, 64)]
    cell_w, cell_h = max(w for w, _ in sizes), max(h for _, h in sizes)
    size = label_font_size(cell_w, cell_h)
    font = load_font(size)
    small_size = max(10, size * 3 // 4)
    pad = max(4, font.size // 3)

    show_x = draw_legend and any(x_labels)
    show_y = draw_legend and any(y_labels)
    x_fitted = [fit_label(label, cell_w - 2 * pad, size, MAX_LABEL_LINES) for label in x_labels] if show_x else []
    top = 2 * pad + max(label.height for label in x_fitted) if show_x else 0
    left = 0
    if show_y:
        natural = max(text_width(font, label) for label in y_labels) + 2 * pad
        left = max(min(natural, max(cell_w, 4 * font.size)), 3 * font.size)
    # a row label has as many lines as its cell's height holds
    y_fitted = [fit_label(label, left - 2 * pad, size, cell_h, cell_h) for label in y_labels] if show_y else []
    caption_fitted = [
        fit_label(c, cell_w - 2 * pad, small_size, MAX_CAPTION_LINES) if c else None for c in (captions or [])
    ]
    caption_h = 2 * pad + max((c.height for c in caption_fitted if c), default=0) if any(caption_fitted) else 0

    layout = GridLayout(columns, rows, cell_w, cell_h, left, top, caption_h, margin)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for index, cell in enumerate(cells):
        column, row = index % columns, index // columns
        x0, y0, x1, y1 = layout.cell_box(column, row)
        if cell is not None:
            grid.paste(
                cell.convert("RGB"), (x0 + (cell_w - cell.width) // 2, y0 + (cell_h - cell.height) // 2)
            )
        caption = caption_fitted[index] if index < len(caption_fitted) else None
        if caption is not None:
            _draw_label(draw, caption, x0 + pad, cell_w - 2 * pad, y1 + pad, CAPTION, centre=False)
    for column, label in enumerate(x_fitted):
        _draw_label(draw, label, layout.cell_box(column, 0)[0], cell_w, pad, TEXT)
    for row, label in enumerate(y_fitted):
        _draw_label(draw, label, 0, left, layout.cell_box(0, row)[1] + (cell_h - label.height) // 2, TEXT)
    return grid, layout


def stack_grids(
    grids: list[Image.Image], titles: list[str], margin: int = 0, draw_legend: bool = True
) -> Image.Image:
    """Z grids side by side (A1111 puts them in one row), each under its Z label."""
    if len(grids) == 1 and not (draw_legend and any(titles)):
        return grids[0]
    width = max(g.width for g in grids)
    size = label_font_size(width // 4, width // 4)
    pad = max(4, size // 3)
    titles_shown = draw_legend and any(titles)
    fitted = [fit_label(t, width - 2 * pad, size, MAX_LABEL_LINES) for t in titles] if titles_shown else []
    band = 2 * pad + max(label.height for label in fitted) if fitted else 0
    total_w = sum(g.width for g in grids) + margin * (len(grids) - 1)
    out = Image.new("RGB", (total_w, band + max(g.height for g in grids)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    x = 0
    for index, grid in enumerate(grids):
        out.paste(grid, (x, band))
        if fitted:
            _draw_label(draw, fitted[index], x, grid.width, pad, TEXT)
        x += grid.width + margin
    return out
