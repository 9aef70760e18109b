"""Image grids for people to look at."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw


def image_grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str] | None = None,
               scale: int = 2, label_width: int = 260, pad: int = 2) -> Image.Image:
    """A grid with one row per list of images (upscaled ``scale``x, nearest) and a text label."""
    cell = max(im.size[0] for row in rows for im in row) * scale
    columns = max(len(row) for row in rows)
    left = label_width if labels else 0
    grid = Image.new("RGB", (left + columns * (cell + pad), len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        y = r * (cell + pad)
        if labels:
            draw.multiline_text((6, y + 6), _wrap(labels[r], 38), fill="black", spacing=2)
        for c, image in enumerate(row):
            tile = image.convert("RGB").resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (left + c * (cell + pad), y))
    return grid


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
