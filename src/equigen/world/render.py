"""The mini-world renderer: ``render(scene, seed)`` draws one scene as a small RGB image.

A pure function: everything random comes from ``numpy.random.default_rng(seed)`` created here,
so the same scene and seed give identical pixels. Drawing happens with PIL primitives at
``SUPERSAMPLE`` times the output size in unit coordinates (0..1 across the image), then the image
is box-downsampled (antialiasing), given per-pixel colour noise and mirrored half of the time.

Layout: background (setting, styled per region and style) -> clutter (stereotyped only) ->
person (tone on face and arms, region dress, occupation hat/accessory/prop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

from equigen.errors import EquigenError
from equigen.world.scene import (
    DressSpec,
    RegionSpec,
    Scene,
    StyleSpec,
    WorldSpec,
    check_scene,
    load_world,
)

SUPERSAMPLE = 2
Color = tuple[int, int, int]
T = TypeVar("T")
Point = tuple[float, float]

# Paint that is the same in every region (the regional and style paint lives in world.yaml).
_ROAD, _SIDEWALK, _DASH = (84, 86, 92), (184, 182, 176), (245, 245, 235)
_TILES, _TILE_LINE = (206, 192, 166), (176, 160, 134)
_DIRT, _RUT, _PUDDLE = (164, 132, 92), (128, 100, 66), (96, 88, 70)
_WOOD, _WOOD_LINE, _COUNTER = (176, 124, 78), (136, 92, 56), (150, 100, 60)
_CONCRETE, _CRACK = (150, 138, 118), (70, 58, 46)
_STAIN, _DIRT_SPOT = (96, 80, 56), (92, 72, 46)
_TROUSERS = ((40, 44, 70), (46, 46, 50), (70, 52, 40), (34, 56, 60))
_GLASS, _LIT, _BROKEN = (150, 200, 236), (250, 228, 150), (38, 38, 44)
_FRUIT = ((220, 40, 40), (250, 160, 30), (120, 190, 50), (250, 220, 60), (150, 60, 150))


def render(scene: Scene, seed: int, size: int = 64, world: WorldSpec | None = None) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image; same (scene, seed, size) -> same bytes.

    ``world`` defaults to the packaged ``world.yaml``.
    """
    world = world or load_world()
    check_scene(scene, world)
    if size < 16:
        raise EquigenError(f"image size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    painter = _Painter(world, scene, rng, size * SUPERSAMPLE)
    _BACKGROUNDS[world.settings[scene.setting].kind](painter)
    _draw_clutter(painter)
    _draw_person(painter)
    image = painter.image.reduce(SUPERSAMPLE) if SUPERSAMPLE > 1 else painter.image
    return _finish(image, rng)


def _finish(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-pixel colour noise and a random horizontal mirror."""
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.integers(-4, 5, size=pixels.shape, dtype=np.int16)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------- the painter


class _Painter:
    """PIL drawing in unit coordinates, plus the scene's colour grading.

    ``bg`` grades a background colour (stereotyped: faded toward dust, per-image colour cast,
    per-element jitter); ``dress`` grades clothing (stereotyped: faded). Skin is never graded.
    """

    def __init__(self, world: WorldSpec, scene: Scene, rng: np.random.Generator, pixels: int):
        self.world, self.scene, self.rng, self.n = world, scene, rng, pixels
        self.region: RegionSpec = world.regions[scene.region]
        self.style: StyleSpec = world.style(scene.style)
        self.stereotyped = scene.style == "stereotyped"
        self.dust = np.array(world.dust, dtype=np.float64)
        self.cast = (1.0 + rng.normal(0.0, 0.035)) * (1.0 + rng.normal(0.0, 0.025, size=3))
        self.image = Image.new("RGB", (pixels, pixels))
        self.draw = ImageDraw.Draw(self.image)

    # colours
    def bg(self, color: Sequence[float], jitter: float = 0.04) -> Color:
        c = np.asarray(color, dtype=np.float64)
        c = c + (self.dust - c) * self.style.fade
        return _clip(c * self.cast * (1.0 + self.rng.normal(0.0, jitter)))

    def dress(self, color: Sequence[float], jitter: float = 0.04) -> Color:
        c = np.asarray(color, dtype=np.float64)
        c = c + (self.dust - c) * self.style.dress_fade
        return _clip(c * (1.0 + self.rng.normal(0.0, jitter)))

    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def pick(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]

    # primitives (unit coordinates)
    def _box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        n = self.n
        return [x0 * n, y0 * n, max(x0 * n, x1 * n - 1), max(y0 * n, y1 * n - 1)]

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Color) -> None:
        self.draw.rectangle(self._box(x0, y0, x1, y1), fill=fill)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: Color) -> None:
        self.draw.ellipse(self._box(x0, y0, x1, y1), fill=fill)

    def circle(self, x: float, y: float, r: float, fill: Color) -> None:
        self.ellipse(x - r, y - r, x + r, y + r, fill)

    def ring(self, x: float, y: float, r: float, outline: Color, width: float) -> None:
        self.draw.ellipse(self._box(x - r, y - r, x + r, y + r), outline=outline,
                          width=max(1, round(width * self.n)))

    def pieslice(self, box: tuple[float, float, float, float], start: float, end: float,
                 fill: Color) -> None:
        self.draw.pieslice(self._box(*box), start, end, fill=fill)

    def arc(self, box: tuple[float, float, float, float], start: float, end: float,
            fill: Color, width: float) -> None:
        self.draw.arc(self._box(*box), start, end, fill=fill, width=max(1, round(width * self.n)))

    def polygon(self, points: Sequence[Point], fill: Color) -> None:
        self.draw.polygon([(x * self.n, y * self.n) for x, y in points], fill=fill)

    def line(self, points: Sequence[Point], fill: Color, width: float) -> None:
        self.draw.line([(x * self.n, y * self.n) for x, y in points], fill=fill,
                       width=max(1, round(width * self.n)))

    def paste(self, pixels: np.ndarray, x0: float, y0: float) -> None:
        self.image.paste(Image.fromarray(pixels, "RGB"), (round(x0 * self.n), round(y0 * self.n)))

    def gradient(self, top: Color, bottom: Color, y1: float) -> None:
        """Vertical gradient over rows 0..y1 (the sky)."""
        rows = max(1, round(y1 * self.n))
        t = np.linspace(0.0, 1.0, rows)[:, None]
        band = np.asarray(top, float) * (1 - t) + np.asarray(bottom, float) * t
        pixels = np.broadcast_to(band[:, None, :], (rows, self.n, 3)).astype(np.uint8)
        self.image.paste(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), (0, 0))


def _clip(c: np.ndarray) -> Color:
    r, g, b = np.clip(c, 0, 255).astype(int)
    return int(r), int(g), int(b)


def _shade(color: Color, factor: float) -> Color:
    return _clip(np.asarray(color, dtype=np.float64) * factor)


# ----------------------------------------------------------------------------------- patterns


def pattern_pixels(dress: DressSpec, colors: tuple[Color, Color], width: int, height: int,
                   period: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A ``height`` x ``width`` RGB block of the region's textile pattern (``period`` in pixels)."""
    yy, xx = np.ogrid[0:height, 0:width]
    xx, yy = xx + phase[0], yy + phase[1]
    p = max(2, period)
    kind = dress.pattern
    if kind == "stripes":
        second = (yy // p) % 2 == 1
    elif kind == "checks":
        second = (xx // p + yy // p) % 2 == 1
    elif kind == "zigzag":
        second = ((yy + np.abs(xx % (2 * p) - p)) // p) % 2 == 1
    elif kind == "dots":
        q = 2 * p
        shift = ((yy // q) % 2) * p  # staggered rows
        second = ((xx + shift) % q - q / 2) ** 2 + (yy % q - q / 2) ** 2 < (0.5 * p) ** 2
    else:  # diamonds
        q = 2 * p
        second = np.abs(xx % q - q / 2) + np.abs(yy % q - q / 2) < 0.62 * p
    second = np.broadcast_to(second, (height, width))
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = colors[0]
    out[second] = colors[1]
    return out


# -------------------------------------------------------------------------------- backgrounds


def _draw_sky(p: _Painter, horizon: float) -> None:
    top, bottom = p.style.sky
    p.gradient(p.bg(top, 0.03), p.bg(bottom, 0.03), horizon)


def _draw_ground(p: _Painter, y0: float, paved: Color | None = None) -> None:
    """Ground from ``y0`` down: ``paved`` colour (authentic) or a dirt road with ruts/puddles."""
    if p.style.ground == "paved" and paved is not None:
        p.rect(0, y0, 1, 1, p.bg(paved))
        return
    p.rect(0, y0, 1, 1, p.bg(_DIRT))
    rut = p.bg(_RUT)
    for _ in range(int(p.rng.integers(3, 6))):
        y = p.u(y0 + 0.03, 0.98)
        x = p.u(-0.2, 0.8)
        p.line([(x, y), (x + p.u(0.2, 0.5), y + p.u(-0.02, 0.02))], rut, 0.012)
    for _ in range(int(p.rng.integers(1, 3))):
        x, y = p.u(0.0, 1.0), p.u(y0 + 0.05, 0.97)
        w = p.u(0.06, 0.12)
        p.ellipse(x - w, y - w * 0.3, x + w, y + w * 0.3, p.bg(_PUDDLE))


def _draw_stains(p: _Painter, x0: float, y0: float, x1: float, y1: float) -> None:
    lo, hi = p.style.stains
    for _ in range(int(p.rng.integers(lo, hi + 1))):
        x, y = p.u(x0, x1), p.u(y0, y1)
        w, h = p.u(0.015, 0.04), p.u(0.02, 0.06)
        p.ellipse(x - w, y - h * 0.3, x + w, y + h, p.bg(_STAIN, 0.1))


def _draw_window(p: _Painter, x0: float, y0: float, x1: float, y1: float, arched: bool) -> None:
    broken = p.rng.random() < p.style.broken
    color = _BROKEN if broken else (_LIT if p.rng.random() < 0.3 else _GLASS)
    fill = p.bg(color) if not broken else color
    if arched:
        w = x1 - x0
        p.pieslice((x0, y0 - w * 0.5, x1, y0 + w * 0.5), 180, 360, fill)
    p.rect(x0, y0, x1, y1, fill)
    if broken:
        p.line([(x0, y0), (x1, y1)], p.bg((120, 110, 90)), 0.006)


def _draw_building(p: _Painter, x: float, w: float, top: float, base: float) -> None:
    arch = p.region.architecture
    wall = p.bg(p.pick(arch.walls))
    roof = p.bg(arch.roof_color)
    p.rect(x, top, x + w, base, wall)
    if arch.roof == "gable":
        p.polygon([(x - 0.012, top), (x + w + 0.012, top), (x + w / 2, top - 0.09)], roof)
    elif arch.roof == "dome":
        d = w * 0.36
        p.pieslice((x + w / 2 - d, top - d * 1.1, x + w / 2 + d, top + d * 1.1), 180, 360, roof)
        p.line([(x + w / 2, top - d * 1.1), (x + w / 2, top - d * 1.1 - 0.04)], roof, 0.01)
    elif arch.roof == "stepped":
        p.polygon([(x - 0.03, top), (x + w + 0.03, top), (x + w - 0.02, top - 0.04),
                   (x + 0.02, top - 0.04)], roof)
        p.polygon([(x + 0.01, top - 0.04), (x + w - 0.01, top - 0.04), (x + w * 0.7, top - 0.08),
                   (x + w * 0.3, top - 0.08)], roof)
    elif arch.roof == "arch":
        p.rect(x - 0.006, top - 0.025, x + w + 0.006, top, roof)
    else:  # flat: a parapet and a painted band
        p.rect(x, top - 0.02, x + w, top + 0.008, roof)
        band = top + (base - top) * 0.55
        p.rect(x, band, x + w, band + 0.018, roof)
    _draw_building_windows(p, x, w, top, base, arched=arch.roof == "arch")
    if p.stereotyped:
        _draw_stains(p, x, top, x + w, base)


def _draw_building_windows(p: _Painter, x: float, w: float, top: float, base: float,
                           arched: bool) -> None:
    cols = 2 if w < 0.2 else 3
    win_w = w / (cols * 2 + 1) * 1.2
    gap = (w - cols * win_w) / (cols + 1)
    rows = max(1, int((base - top - 0.04) / 0.085))
    for r in range(rows):
        y0 = top + 0.035 + r * 0.085
        for c in range(cols):
            x0 = x + gap + c * (win_w + gap)
            _draw_window(p, x0, y0, x0 + win_w, y0 + 0.045, arched)


def _draw_street(p: _Painter) -> None:
    horizon = p.u(0.50, 0.58)
    _draw_sky(p, horizon)
    x = p.u(-0.1, -0.02)
    while x < 1.0:
        w = p.u(0.15, 0.26)
        _draw_building(p, x, w, horizon - p.u(0.2, 0.4), horizon + 0.01)
        x += w + p.u(0.0, 0.03)
    if p.style.ground == "paved":
        p.rect(0, horizon, 1, horizon + 0.06, p.bg(_SIDEWALK))
        p.rect(0, horizon + 0.06, 1, horizon + 0.07, p.bg(_shade(_SIDEWALK, 0.75)))
        _draw_ground(p, horizon + 0.07, _ROAD)
        y = p.u(0.80, 0.86)
        dash = p.bg(_DASH)
        for x in np.arange(p.u(-0.1, 0.0), 1.0, 0.2):
            p.rect(float(x), y, float(x) + 0.1, y + 0.022, dash)
    else:
        _draw_ground(p, horizon)


def _draw_awning(p: _Painter, x: float, w: float, y: float, h: float) -> None:
    c1, c2 = (p.bg(c) for c in p.region.awning)
    stripe = w / 7
    for i in range(7):
        xs = x + i * stripe
        color = c1 if i % 2 == 0 else c2
        p.rect(xs, y, xs + stripe, y + h, color)
        p.pieslice((xs, y + h - stripe / 2, xs + stripe, y + h + stripe / 2), 0, 180, color)
    if p.stereotyped:  # torn, sagging tarp
        for _ in range(int(p.rng.integers(1, 3))):
            hx, hy = p.u(x, x + w), p.u(y, y + h)
            s = p.u(0.02, 0.035)
            p.polygon([(hx, hy), (hx + s, hy + s * 0.4), (hx + s * 0.3, hy + s)], p.bg(_BROKEN))


def _draw_market(p: _Painter) -> None:
    horizon = p.u(0.52, 0.58)
    _draw_sky(p, horizon)
    x = p.u(-0.15, -0.02)
    post = p.bg((90, 64, 40))
    while x < 1.0:
        w = p.u(0.28, 0.36)
        top = horizon - p.u(0.30, 0.35)
        p.rect(x + 0.01, top + 0.08, x + w - 0.01, horizon - 0.06, p.bg((92, 76, 64)))
        p.rect(x + 0.015, top, x + 0.03, horizon + 0.06, post)
        p.rect(x + w - 0.03, top, x + w - 0.015, horizon + 0.06, post)
        _draw_awning(p, x, w, top, 0.08)
        p.rect(x, horizon - 0.06, x + w, horizon + 0.06, p.bg(_COUNTER))
        p.rect(x, horizon - 0.06, x + w, horizon - 0.045, p.bg(_shade(_COUNTER, 1.2)))
        goods = int(p.rng.integers(0, 3) if p.stereotyped else p.rng.integers(6, 10))
        for _ in range(goods):
            p.circle(p.u(x + 0.03, x + w - 0.03), horizon - 0.07, 0.018,
                     p.bg(p.pick(_FRUIT), 0.08))
        x += w + p.u(0.01, 0.04)
    _draw_ground(p, horizon + 0.06, _TILES)
    if p.style.ground == "paved":
        line = p.bg(_TILE_LINE)
        for y in np.arange(horizon + 0.12, 1.0, 0.08):
            p.rect(0, float(y), 1, float(y) + 0.006, line)
        for x in np.arange(p.u(0, 0.1), 1.0, 0.12):
            p.rect(float(x), horizon + 0.06, float(x) + 0.006, 1, line)


def _draw_home(p: _Painter) -> None:
    floor = p.u(0.64, 0.70)
    wall = p.bg(p.region.home_wall, 0.03)
    p.rect(0, 0, 1, floor, wall)
    p.rect(0, floor - 0.03, 1, floor, p.bg(_shade(p.region.home_wall, 0.7)))
    _draw_home_window(p, p.u(0.02, 0.06), p.u(0.08, 0.12))
    _draw_wall_hanging(p, p.u(0.60, 0.66), p.u(0.06, 0.11))
    if p.style.ground == "paved":
        p.rect(0, floor, 1, 1, p.bg(_WOOD))
        line = p.bg(_WOOD_LINE)
        for y in np.arange(floor + 0.06, 1.0, 0.07):
            p.rect(0, float(y), 1, float(y) + 0.008, line)
    else:
        p.rect(0, floor, 1, 1, p.bg(_CONCRETE))
        _draw_stains(p, 0, 0.02, 1, floor - 0.05)
        _draw_cracks(p, floor)
        bulb_x = p.u(0.4, 0.6)
        p.line([(bulb_x, 0), (bulb_x, 0.1)], p.bg((40, 40, 40)), 0.008)
        p.circle(bulb_x, 0.11, 0.02, (250, 236, 170))


def _draw_home_window(p: _Painter, x: float, y: float) -> None:
    w, h = 0.17, 0.2
    frame = p.bg((240, 236, 226) if not p.stereotyped else (120, 96, 66))
    p.rect(x - 0.015, y - 0.015, x + w + 0.015, y + h + 0.015, frame)
    if p.stereotyped:
        p.rect(x, y, x + w, y + h, _BROKEN)
        plank = p.bg((140, 104, 64))
        p.line([(x, y + 0.03), (x + w, y + h - 0.05)], plank, 0.03)
        p.line([(x, y + h - 0.03), (x + w, y + 0.04)], plank, 0.03)
    else:
        p.rect(x, y, x + w, y + h, p.bg(p.world.styles.authentic.sky[0]))
        p.rect(x + w / 2 - 0.006, y, x + w / 2 + 0.006, y + h, frame)
        p.rect(x, y + h / 2 - 0.006, x + w, y + h / 2 + 0.006, frame)


def _draw_wall_hanging(p: _Painter, x: float, y: float) -> None:
    """A rug in the region's textile pattern: a regional cue indoors."""
    w, h = 0.26, 0.2
    px_w, px_h = round(w * p.n), round(h * p.n)
    colors = (p.dress(p.region.dress.colors[0]), p.dress(p.region.dress.colors[1]))
    period = max(3, round(0.04 * p.n))
    p.rect(x - 0.01, y - 0.01, x + w + 0.01, y + h + 0.01, p.bg((110, 80, 50)))
    p.paste(pattern_pixels(p.region.dress, colors, px_w, px_h, period), x, y)


def _draw_cracks(p: _Painter, floor: float) -> None:
    crack = p.bg(_CRACK)
    for _ in range(int(p.rng.integers(2, 4))):
        x, y = p.u(0.05, 0.95), p.u(0.05, floor - 0.2)
        points = [(x, y)]
        for _ in range(4):
            x, y = x + p.u(-0.04, 0.04), y + p.u(0.02, 0.05)
            points.append((x, y))
        p.line(points, crack, 0.008)


_BACKGROUNDS = {"street": _draw_street, "market": _draw_market, "home": _draw_home}


# ------------------------------------------------------------------------------------ clutter


def _draw_clutter(p: _Painter) -> None:
    """Run-down clutter on the ground (stereotyped scenes only): bags, tyres, crates, scrap."""
    lo, hi = p.style.clutter
    count = int(p.rng.integers(lo, hi + 1)) if hi > 0 else 0
    items = sorted((p.u(0.72, 0.99), p.u(0.0, 1.0), int(p.rng.integers(5))) for _ in range(count))
    for y, x, kind in items:
        s = 0.035 + 0.05 * (y - 0.7) / 0.3
        if kind == 0:  # rubbish bag
            p.ellipse(x - s, y - s * 1.3, x + s, y, p.bg((44, 48, 44)))
            p.circle(x, y - s * 1.35, s * 0.25, p.bg((44, 48, 44)))
        elif kind == 1:  # tyre
            p.ring(x, y - s * 0.6, s * 0.7, p.bg((28, 28, 30)), s * 0.35)
        elif kind == 2:  # crate
            wood = p.bg((150, 110, 66))
            p.rect(x - s, y - s * 1.2, x + s, y, wood)
            p.line([(x - s, y - s * 1.2), (x + s, y)], p.bg((100, 70, 40)), 0.008)
        elif kind == 3:  # scrap sheet
            p.polygon([(x - s, y), (x + s * 1.2, y - s * 0.2), (x + s * 0.6, y - s * 0.9),
                       (x - s * 0.7, y - s * 0.7)], p.bg((150, 90, 60)))
        else:  # cans and paper
            p.rect(x - s * 0.3, y - s * 0.7, x + s * 0.1, y, p.bg((170, 170, 176)))
            p.rect(x + s * 0.2, y - s * 0.25, x + s * 1.0, y, p.bg((226, 222, 206)))


# ------------------------------------------------------------------------------------- person


def _draw_person(p: _Painter) -> None:
    s = p.u(0.92, 1.05)
    cx, feet = p.u(0.27, 0.37), p.u(0.91, 0.95)
    skin = _skin(p)
    body = _Body(cx, feet, s)
    occupation = p.world.occupations[p.scene.occupation]
    dress = p.region.dress
    c1 = p.dress(dress.colors[0])
    c2 = p.dress(dress.colors[1])
    _draw_legs(p, body)
    if occupation.accessory == "bricks":
        _draw_bricks(p, body)
    if occupation.prop in ("pitchfork", "board"):
        _draw_prop(p, occupation.prop, body)  # stands behind the arm
    _draw_arms(p, body, skin, c1)
    _draw_torso(p, body, dress, (c1, c2))
    _draw_head(p, body, skin, occupation.hat, occupation.accessory)
    if occupation.accessory == "stethoscope":
        p.arc((cx - 0.07 * s, body.torso_top - 0.06 * s, cx + 0.07 * s, body.torso_top + 0.12 * s),
              20, 160, (60, 60, 70), 0.016)
        p.circle(cx + 0.05 * s, body.torso_top + 0.125 * s, 0.022 * s, (190, 194, 204))
    if occupation.prop not in ("pitchfork", "board"):
        _draw_prop(p, occupation.prop, body)
    p.circle(body.hand_x, body.hand_y, 0.035 * s, skin)


class _Body:
    """The figure's key points, from the feet up; ``s`` scales everything."""

    def __init__(self, cx: float, feet: float, s: float):
        self.cx, self.feet, self.s = cx, feet, s
        self.leg_top = feet - 0.17 * s
        self.torso_top = self.leg_top - 0.27 * s
        self.half_w = 0.125 * s
        self.head_r = 0.115 * s
        self.head_y = self.torso_top - 0.1 * s
        self.hand_x = cx + self.half_w + 0.09 * s
        self.hand_y = self.torso_top + 0.2 * s


def _skin(p: _Painter) -> Color:
    tone = np.asarray(p.world.tones[p.scene.tone].rgb, dtype=np.float64)
    j = p.world.tone_jitter
    brightness = 1.0 + p.u(-j, j)
    hue = 1.0 + p.rng.uniform(-j / 3, j / 3, size=3)
    return _clip(tone * brightness * hue)


def _draw_legs(p: _Painter, b: _Body) -> None:
    s = b.s
    trousers = p.dress(p.pick(_TROUSERS))
    shoe = p.dress((30, 26, 24))
    for side in (-1, 1):
        x0 = b.cx + side * 0.012 * s if side > 0 else b.cx - 0.1 * s
        x1 = x0 + 0.088 * s
        p.rect(x0, b.leg_top - 0.01, x1, b.feet - 0.02 * s, trousers)
        p.rect(x0 - (0.015 * s if side < 0 else 0), b.feet - 0.03 * s,
               x1 + (0.015 * s if side > 0 else 0), b.feet, shoe)


def _draw_arms(p: _Painter, b: _Body, skin: Color, sleeve: Color) -> None:
    s, w = b.s, 0.075 * b.s
    shoulder_y = b.torso_top + 0.045 * s
    left = ((b.cx - b.half_w + 0.02 * s, shoulder_y), (b.cx - b.half_w - 0.045 * s, b.leg_top))
    right = ((b.cx + b.half_w - 0.02 * s, shoulder_y), (b.hand_x, b.hand_y))
    for (x0, y0), (x1, y1) in (left, right):
        p.line([(x0, y0), (x1, y1)], skin, w)
        p.line([(x0, y0), (x0 + (x1 - x0) * 0.4, y0 + (y1 - y0) * 0.4)], sleeve, w * 1.15)
    lx, ly = left[1]
    p.circle(lx, ly, 0.035 * s, skin)


def _draw_torso(p: _Painter, b: _Body, dress: DressSpec, colors: tuple[Color, Color]) -> None:
    s = b.s
    x0, y0 = b.cx - b.half_w, b.torso_top
    w_px, h_px = round(2 * b.half_w * p.n), round((b.leg_top - b.torso_top + 0.01) * p.n)
    period = max(4, round(0.048 * s * p.n))
    phase = (int(p.rng.integers(period * 2)), int(p.rng.integers(period * 2)))
    p.paste(pattern_pixels(dress, colors, w_px, h_px, period, phase), x0, y0)
    if p.stereotyped:  # dirt spots and a patch on a faded garment
        lo, hi = p.style.stains
        for _ in range(int(p.rng.integers(lo, hi + 1)) // 2):
            x, y = p.u(x0, x0 + 2 * b.half_w), p.u(y0 + 0.03, b.leg_top)
            r = p.u(0.01, 0.02) * s
            p.ellipse(x - r * 1.4, y - r, x + r * 1.4, y + r, p.dress(_DIRT_SPOT, 0.1))
        px, py = p.u(x0, x0 + b.half_w), p.u(y0 + 0.05, b.leg_top - 0.07)
        p.rect(px, py, px + 0.06 * s, py + 0.06 * s, p.dress((120, 110, 96)))


def _draw_head(p: _Painter, b: _Body, skin: Color, hat: str, accessory: str) -> None:
    cx, cy, r, s = b.cx, b.head_y, b.head_r, b.s
    p.ellipse(cx - r, cy - r, cx + r, cy + r * 1.05, skin)
    if hat == "none":  # a hair cap over the top third of the head
        hair = p.pick(p.world.hair)
        p.pieslice((cx - r * 1.05, cy - r * 1.1, cx + r * 1.05, cy + r * 0.45), 180, 360, hair)
    eye = (24, 16, 14)
    for side in (-1, 1):
        p.circle(cx + side * 0.04 * s, cy + 0.005 * s, 0.013 * s, eye)
    p.line([(cx - 0.025 * s, cy + 0.055 * s), (cx + 0.025 * s, cy + 0.055 * s)],
           _shade(skin, 0.7), 0.01 * s)
    if accessory == "glasses":
        for side in (-1, 1):
            p.ring(cx + side * 0.04 * s, cy + 0.005 * s, 0.03 * s, (30, 30, 34), 0.01)
        p.line([(cx - 0.012 * s, cy), (cx + 0.012 * s, cy)], (30, 30, 34), 0.01)
    _HATS[hat](p, cx, cy - r, s)


def _hat_none(p: _Painter, cx: float, top: float, s: float) -> None:
    return None


def _hat_toque(p: _Painter, cx: float, top: float, s: float) -> None:
    white = (246, 246, 244)
    p.rect(cx - 0.075 * s, top - 0.1 * s, cx + 0.075 * s, top + 0.035 * s, white)
    p.ellipse(cx - 0.1 * s, top - 0.17 * s, cx + 0.1 * s, top - 0.05 * s, white)
    p.rect(cx - 0.08 * s, top + 0.005 * s, cx + 0.08 * s, top + 0.035 * s, (214, 214, 214))


def _hat_straw(p: _Painter, cx: float, top: float, s: float) -> None:
    straw = (226, 192, 108)
    p.pieslice((cx - 0.1 * s, top - 0.07 * s, cx + 0.1 * s, top + 0.09 * s), 180, 360, straw)
    p.ellipse(cx - 0.19 * s, top - 0.005 * s, cx + 0.19 * s, top + 0.05 * s, straw)
    p.rect(cx - 0.1 * s, top - 0.005 * s, cx + 0.1 * s, top + 0.01 * s, (150, 64, 40))


def _hat_hardhat(p: _Painter, cx: float, top: float, s: float) -> None:
    yellow = (250, 198, 10)
    p.pieslice((cx - 0.125 * s, top - 0.075 * s, cx + 0.125 * s, top + 0.12 * s), 180, 360, yellow)
    p.rect(cx - 0.15 * s, top + 0.02 * s, cx + 0.15 * s, top + 0.045 * s, yellow)
    p.rect(cx - 0.012 * s, top - 0.075 * s, cx + 0.012 * s, top + 0.02 * s, (220, 168, 0))


_HATS = {"none": _hat_none, "toque": _hat_toque, "straw": _hat_straw, "hardhat": _hat_hardhat}


# -------------------------------------------------------------------------------------- props


def _draw_prop(p: _Painter, prop: str, b: _Body) -> None:
    _PROPS[prop](p, b.hand_x, b.hand_y, b)


def _prop_medkit(p: _Painter, hx: float, hy: float, b: _Body) -> None:
    s = b.s
    x0, y0, x1, y1 = hx - 0.05 * s, hy + 0.02 * s, hx + 0.17 * s, hy + 0.19 * s
    handle = (hx - 0.03 * s, hy - 0.02 * s, hx + 0.09 * s, hy + 0.06 * s)
    p.arc(handle, 180, 360, (60, 60, 64), 0.014)
    p.rect(x0, y0, x1, y1, (200, 200, 204))
    p.rect(x0 + 0.008, y0 + 0.008, x1 - 0.008, y1 - 0.008, (248, 248, 248))
    mx, my, a, t = (x0 + x1) / 2, (y0 + y1) / 2, 0.055 * s, 0.02 * s
    red = (222, 30, 34)
    p.rect(mx - a, my - t, mx + a, my + t, red)
    p.rect(mx - t, my - a, mx + t, my + a, red)


def _prop_pan(p: _Painter, hx: float, hy: float, b: _Body) -> None:
    s = b.s
    px, py, r = hx + 0.15 * s, hy - 0.03 * s, 0.085 * s
    p.line([(hx, hy), (px - r * 0.8, py)], (40, 34, 30), 0.025 * s)
    p.circle(px, py, r, (110, 110, 116))
    p.circle(px, py, r * 0.82, (28, 28, 30))
    p.ellipse(px - 0.045 * s, py - 0.035 * s, px + 0.045 * s, py + 0.04 * s, (250, 250, 246))
    p.circle(px + 0.005 * s, py, 0.02 * s, (250, 196, 20))


def _prop_pitchfork(p: _Painter, hx: float, hy: float, b: _Body) -> None:
    s = b.s
    x, top = hx + 0.005 * s, b.head_y - 0.2 * s
    steel = (160, 162, 172)
    p.line([(x, b.feet - 0.01), (x, top + 0.03 * s)], (142, 96, 50), 0.024 * s)
    p.rect(x - 0.065 * s, top + 0.02 * s, x + 0.065 * s, top + 0.04 * s, steel)
    for dx in (-0.06, 0.0, 0.06):
        p.line([(x + dx * s, top + 0.04 * s), (x + dx * s, top - 0.07 * s)], steel, 0.016 * s)


def _prop_board(p: _Painter, hx: float, hy: float, b: _Body) -> None:
    s = b.s
    x0, y0, x1, y1 = hx + 0.07 * s, hy - 0.24 * s, hx + 0.37 * s, hy + 0.01 * s
    frame = (128, 84, 44)
    for lx in (x0 + 0.04 * s, x1 - 0.04 * s):
        p.line([(lx, y1), (lx + (lx - (x0 + x1) / 2) * 0.3, b.feet)], frame, 0.018 * s)
    p.rect(x0, y0, x1, y1, frame)
    p.rect(x0 + 0.016 * s, y0 + 0.016 * s, x1 - 0.016 * s, y1 - 0.016 * s, (34, 92, 58))
    chalk = (236, 240, 232)
    for i, frac in enumerate((0.75, 0.55, 0.65)):
        y = y0 + (0.06 + i * 0.06) * s
        p.rect(x0 + 0.04 * s, y, x0 + 0.04 * s + (x1 - x0 - 0.08 * s) * frac, y + 0.014 * s, chalk)
    p.line([(hx, hy), (x0 + 0.06 * s, y0 + 0.08 * s)], (200, 170, 110), 0.012 * s)


def _prop_hammer(p: _Painter, hx: float, hy: float, b: _Body) -> None:
    s = b.s
    top = hy - 0.19 * s
    p.line([(hx, hy + 0.04 * s), (hx + 0.03 * s, top)], (150, 100, 54), 0.026 * s)
    p.polygon([(hx - 0.06 * s, top - 0.04 * s), (hx + 0.11 * s, top - 0.04 * s),
               (hx + 0.11 * s, top + 0.03 * s), (hx - 0.06 * s, top + 0.03 * s),
               (hx - 0.09 * s, top + 0.05 * s)], (118, 122, 132))


def _draw_bricks(p: _Painter, b: _Body) -> None:
    s = b.s
    brick, mortar = (176, 72, 48), (210, 200, 186)
    x0 = b.hand_x + 0.06 * s
    bw, bh = 0.085 * s, 0.04 * s
    for row in range(3):
        y1 = b.feet - row * bh
        offset = (bw / 2) * (row % 2)
        for col in range(3 - row % 2):
            bx = x0 + offset + col * bw
            p.rect(bx, y1 - bh, bx + bw, y1, mortar)
            p.rect(bx + 0.004, y1 - bh + 0.004, bx + bw - 0.004, y1 - 0.004, brick)


_PROPS = {"medkit": _prop_medkit, "pan": _prop_pan, "pitchfork": _prop_pitchfork,
          "board": _prop_board, "hammer": _prop_hammer}


def render_rows(rows: list[dict], size: int = 64) -> np.ndarray:
    """Dataset rows (``sample_rows`` format: ground truth + ``seed``) -> uint8 [N, size, size, 3]."""
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        scene = Scene(row["tone"], row["region"], row["occupation"], row["setting"], row["style"])
        out[i] = np.asarray(render(scene, row["seed"], size=size))
    return out
