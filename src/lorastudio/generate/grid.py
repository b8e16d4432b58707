"""Drawing comparison grids: cells in rows and columns, axis labels on top and left.

The layout is plain arithmetic so callers (and tests) can find any cell in the picture:
`GridLayout.cell_box(column, row)`. Labels are wrapped to their band; Chinese labels
need a CJK font (generate/fonts.py finds one).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from lorastudio.generate.fonts import line_height, load_font, text_width, wrap_text

__all__ = ["GridLayout", "draw_grid", "stack_grids", "wrap_text", "label_font_size"]

BACKGROUND = "white"
TEXT = "black"
CAPTION = (60, 60, 60)
MAX_CAPTION_LINES = 2


def label_font_size(cell_w: int, cell_h: int) -> int:
    """About A1111's size ((w + h) / 25), but never too small to read on tiny cells."""
    return max(12, min(48, (cell_w + cell_h) // 25))


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
    font = load_font(label_font_size(cell_w, cell_h))
    small = load_font(max(10, label_font_size(cell_w, cell_h) * 3 // 4))
    pad = max(4, font.size // 3)
    line_h, small_h = line_height(font), line_height(small)

    show_x = draw_legend and any(x_labels)
    show_y = draw_legend and any(y_labels)
    x_lines = [wrap_text(font, label, cell_w - 2 * pad) for label in x_labels] if show_x else []
    top = 2 * pad + line_h * max(len(lines) for lines in x_lines) if show_x else 0
    left = 0
    if show_y:
        natural = max(text_width(font, label) for label in y_labels) + 2 * pad
        left = max(min(natural, max(cell_w, 4 * font.size)), 3 * font.size)
    y_lines = [wrap_text(font, label, left - 2 * pad) for label in y_labels] if show_y else []
    caption_lines = [
        wrap_text(small, c, cell_w - 2 * pad)[:MAX_CAPTION_LINES] if c else [] for c in (captions or [])
    ]
    caption_h = 2 * pad + small_h * max(len(c) for c in caption_lines) if any(caption_lines) else 0

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
        if index < len(caption_lines):
            for n, line in enumerate(caption_lines[index]):
                draw.text((x0 + pad, y1 + pad + n * small_h), line, fill=CAPTION, font=small)
    for column, lines in enumerate(x_lines):
        x0 = layout.cell_box(column, 0)[0]
        for n, line in enumerate(lines):
            x = x0 + (cell_w - text_width(font, line)) // 2
            draw.text((x, pad + n * line_h), line, fill=TEXT, font=font)
    for row, lines in enumerate(y_lines):
        y0 = layout.cell_box(0, row)[1] + (cell_h - line_h * len(lines)) // 2
        for n, line in enumerate(lines):
            x = (left - text_width(font, line)) // 2
            draw.text((x, y0 + n * line_h), line, fill=TEXT, font=font)
    return grid, layout


def stack_grids(
    grids: list[Image.Image], titles: list[str], margin: int = 0, draw_legend: bool = True
) -> Image.Image:
    """Z grids side by side (A1111 puts them in one row), each under its Z label."""
    if len(grids) == 1 and not (draw_legend and any(titles)):
        return grids[0]
    width = max(g.width for g in grids)
    font = load_font(label_font_size(width // 4, width // 4))
    pad = max(4, font.size // 3)
    line_h = line_height(font)
    title_lines = [wrap_text(font, t, width - 2 * pad) for t in titles] if draw_legend and any(titles) else []
    band = 2 * pad + line_h * max(len(lines) for lines in title_lines) if title_lines else 0
    total_w = sum(g.width for g in grids) + margin * (len(grids) - 1)
    out = Image.new("RGB", (total_w, band + max(g.height for g in grids)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    x = 0
    for index, grid in enumerate(grids):
        out.paste(grid, (x, band))
        for n, line in enumerate(title_lines[index] if title_lines else []):
            draw.text(
                (x + (grid.width - text_width(font, line)) // 2, pad + n * line_h), line, fill=TEXT, font=font
            )
        x += grid.width + margin
    return out
