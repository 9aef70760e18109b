"""``report.html``: one self-contained page that shows an audit, or compares audits before/after.

The page works offline, opened from disk: CSS inline, charts as inline SVG, images as base64 PNG
thumbnails, no scripts, fonts or links to fetch.

One run: a header (model, prompt set, n, guidance, seed), the summary table of every fairness
metric and named-attribute accuracy with its 95% interval (from ``results.json``), then the
prompts worst first (by the FD of the first attribute), each with an image grid and, per
attribute, a bar chart of the distribution against the target.

Several runs (the first is the baseline "A"): on the prompts they share, every figure of every
run and its change from A with a 95% bootstrap interval. The change is recomputed from the labels
in each run's ``annotations.csv``: images are resampled within each run and prompt independently
(resampling n labels with replacement draws the group counts from Multinomial(n, p_hat), which is
how it is done here), a figure over prompts is the mean over prompts (as in
:func:`~equigen.audit.metrics.mean_over_prompts`), and a change whose interval excludes zero is
called an improvement or a regression (lower is better for FD, KL and MAD; higher for entropy and
accuracy).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equigen import __version__
from equigen.audit.metrics import (
    METRICS,
    bias_corrected_percentiles,
    distribution,
    joint_labels,
    joint_target,
)
from equigen.audit.results import ABSTAINED, fairness_metrics
from equigen.errors import EquigenError
from equigen.utils.io import write_text_atomic

RESULTS = "results.json"
ANNOTATIONS = "annotations.csv"
THUMBS = 16  # images shown per prompt and run
THUMB_MAX = 128  # larger images are shrunk to this many pixels a side
PIXELATED_BELOW = 128  # images this small are upscaled with crisp pixels

METRIC_NAMES = {"fd": "FD", "kl": "KL", "mad": "MAD", "entropy": "Entropy", "accuracy": "Accuracy"}
METRIC_HELP = {
    "fd": "fairness discrepancy ‖p − target‖₂; 0 is on target",
    "kl": "KL(p ‖ target) in nats; 0 is on target",
    "mad": "mean absolute deviation of the shares from 1/K; 0 is balanced",
    "entropy": "normalised entropy H(p)/log K; 1 is balanced, 0 is one group",
    "accuracy": "share of images showing the group the prompt names",
}
HIGHER_IS_BETTER = {"entropy", "accuracy"}
RUN_COLOURS = ["#94a3b8", "#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed"]


def _colours(n: int) -> list[str]:
    """A colour per run (A grey, B blue, ...), repeating past six runs."""
    return [RUN_COLOURS[i % len(RUN_COLOURS)] for i in range(n)]
SINGLE_COLOUR = "#2563eb"


# --------------------------------------------------------------------------------------- loading


@dataclass
class AuditImage:
    index: int
    seed: str
    file: str
    labels: dict[str, str]


@dataclass
class Run:
    """One audit folder: its results, and the labels and images of ``annotations.csv``."""

    path: Path
    results: dict[str, Any]
    groups: dict[str, list[str]]  # attribute -> group names, in the prompt set's order
    labels: dict[str, dict[str, np.ndarray]]  # prompt id -> attribute -> group index (-1 abstained)
    images: dict[str, list[AuditImage]]  # prompt id -> images in index order
    name: str = ""
    letter: str = "A"

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config") or {}

    @cached_property
    def prompts(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.results["prompts"]}

    @property
    def attributes(self) -> list[str]:
        return list(self.groups)

    def target(self, attribute: str) -> np.ndarray:
        for p in self.results["prompts"]:
            if attribute in p["attributes"]:
                return np.asarray(p["attributes"][attribute]["target"], float)
        raise KeyError(attribute)


def load_run(path: Path) -> Run:
    """Read an audit folder; :class:`EquigenError` when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise EquigenError(f"{path}: no such folder (give the --out folder of an `equigen audit`)")
    results_path, annotations_path = path / RESULTS, path / ANNOTATIONS
    for needed in (results_path, annotations_path):
        if not needed.is_file():
            raise EquigenError(f"{path}: not an audit run ({needed.name} is missing; an audit "
                               f"folder has {RESULTS}, {ANNOTATIONS} and images/)")
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as exc:
        raise EquigenError(f"{results_path}: not readable as JSON ({exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("prompts"), list) \
            or not results["prompts"] or "summary" not in results:
        raise EquigenError(f"{results_path}: not an audit results file (needs `prompts` and "
                           "`summary`, as written by `equigen audit`)")
    attributes = list(results["prompts"][0].get("attributes", {}))
    with annotations_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        rows = list(reader)
    missing = [c for c in ("prompt_id", "index", "file", *attributes) if c not in header]
    if missing:
        raise EquigenError(f"{annotations_path}: column(s) {', '.join(missing)} missing "
                           "(not written by `equigen audit`?)")
    groups = {a: _groups_from_header(header, a, attributes, results) for a in attributes}
    labels: dict[str, dict[str, list[int]]] = {}
    images: dict[str, list[AuditImage]] = {}
    for line, row in enumerate(rows, start=2):
        pid = row["prompt_id"]
        per = labels.setdefault(pid, {a: [] for a in attributes})
        for a in attributes:
            value = row[a]
            if value == "":
                per[a].append(ABSTAINED)
            elif value in groups[a]:
                per[a].append(groups[a].index(value))
            else:
                raise EquigenError(f"{annotations_path}, line {line}: {a}={value!r} is not one of "
                                   f"{groups[a]}")
        images.setdefault(pid, []).append(
            AuditImage(int(row["index"]), row.get("seed", ""), row["file"], {a: row[a] for a in attributes}))
    for entries in images.values():
        entries.sort(key=lambda im: im.index)
    known = {p["id"] for p in results["prompts"]}
    absent = sorted(known - set(labels))
    if absent:
        raise EquigenError(f"{annotations_path}: no rows for prompt(s) {', '.join(absent[:3])}"
                           f"{' ...' if len(absent) > 3 else ''} of {RESULTS}")
    arrays = {pid: {a: np.asarray(v, dtype=int) for a, v in per.items()} for pid, per in labels.items()}
    return Run(path, results, groups, arrays, images, name=path.resolve().name or str(path))


def _groups_from_header(header: list[str], attribute: str, attributes: list[str],
                        results: dict[str, Any]) -> list[str]:
    """The groups of an attribute from its probability columns ``p_<attribute>_<group>``."""
    prefix = f"p_{attribute}_"
    # an attribute whose name extends this one's ("tone" and "tone_x") owns its own columns
    longer = [f"p_{b}_" for b in attributes if b != attribute and b.startswith(attribute)]
    groups = [c[len(prefix):] for c in header
              if c.startswith(prefix) and not any(c.startswith(o) for o in longer)]
    k = len(results["prompts"][0]["attributes"][attribute]["distribution"])
    if len(groups) != k:  # no probability columns: name the groups by position
        groups = [f"group {i + 1}" for i in range(k)]
    return groups


# ------------------------------------------------------------------------------------- statistics


def metric_rows(name: str, dists: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``METRICS[name]`` applied to every row of ``dists`` (vectorised for the known metrics;
    the test checks they equal the functions in :mod:`equigen.audit.metrics`)."""
    p, u = np.asarray(dists, float), np.asarray(target, float)
    if name == "fd":
        return np.linalg.norm(p - u, axis=1)
    if name == "kl":
        if np.any((u == 0) & (p > 0).any(axis=0)):
            return np.array([METRICS["kl"](row, u) for row in p])
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / np.where(u > 0, u, 1)), 0.0)
        return terms.sum(axis=1)
    if name == "mad":
        return np.abs(p - p.mean(axis=1, keepdims=True)).mean(axis=1)
    if name == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0).sum(axis=1)
        return h / np.log(p.shape[1])
    if name == "tv":
        return 0.5 * np.abs(p - u).sum(axis=1)
    return np.array([METRICS[name](row, u) for row in p])


def resampled_distributions(labels: np.ndarray, k: int, n_boot: int,
                            rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap draws of the group shares of ``labels`` (n_boot x k): resampling n
    labels with replacement gives counts ~ Multinomial(n, distribution(labels))."""
    n = len(labels)
    return rng.multinomial(n, distribution(labels, k), size=n_boot) / n


Interval = tuple[float, float, float]


@dataclass
class Compared:
    """A figure for each run, with intervals, and each later run's change from the first."""

    values: list[Interval]
    deltas: list[Interval]  # deltas[i] = run i+1 minus run 0

    @staticmethod
    def from_draws(estimates: Sequence[float], draws: Sequence[np.ndarray],
                   level: float = 0.95) -> "Compared":
        def interval(est: float, d: np.ndarray) -> Interval:
            lo, hi = bias_corrected_percentiles(d, est, level)
            return float(est), lo, hi

        values = [interval(e, d) for e, d in zip(estimates, draws)]
        deltas = [interval(estimates[i] - estimates[0], draws[i] - draws[0])
                  for i in range(1, len(draws))]
        return Compared(values, deltas)


def compare_fairness(per_run: Sequence[Sequence[np.ndarray]], k: int, target: np.ndarray,
                     metrics: Sequence[str], n_boot: int, rng: np.random.Generator
                     ) -> dict[str, Compared]:
    """``per_run[r][j]``: the kept labels of prompt j in run r. Each metric's mean over prompts in
    every run and its change from run 0, images resampled within each run and prompt."""
    out = {}
    draws_per_run = [[resampled_distributions(l, k, n_boot, rng) for l in prompts]
                     for prompts in per_run]
    for m in metrics:
        estimates = [float(np.mean([METRICS[m](distribution(l, k), target) for l in prompts]))
                     for prompts in per_run]
        draws = [np.mean([metric_rows(m, d, target) for d in dists], axis=0)
                 for dists in draws_per_run]
        out[m] = Compared.from_draws(estimates, draws)
    return out


def compare_accuracy(per_run: Sequence[Sequence[np.ndarray]], n_boot: int,
                     rng: np.random.Generator) -> Compared:
    """``per_run[r][j]``: 0/1 hits of prompt j in run r; pooled accuracy, resampled per prompt."""
    estimates, draws = [], []
    for prompts in per_run:
        total = sum(len(h) for h in prompts)
        estimates.append(float(sum(h.sum() for h in prompts) / total))
        draws.append(sum(rng.binomial(len(h), h.mean(), size=n_boot) for h in prompts) / total)
    return Compared.from_draws(estimates, draws)


def verdict(metric: str, delta: Interval) -> str:
    """``improved``, ``regressed`` or ``no-change`` (the interval of the change contains 0)."""
    _, lo, hi = delta
    if lo <= 0 <= hi:
        return "no-change"
    up = lo > 0
    return "improved" if up == (metric in HIGHER_IS_BETTER) else "regressed"


def max_fd(target: np.ndarray) -> float:
    """The largest FD possible against ``target``: every image in one group."""
    target = np.asarray(target, float)
    return float(max(np.linalg.norm(np.eye(len(target))[i] - target) for i in range(len(target))))


# --------------------------------------------------------------------------------- formatting


def _num(x: float, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    x = round(float(x), digits) + 0.0  # no "-0.00"
    text = f"{x:+.{digits}f}" if signed and x != 0 else f"{x:.{digits}f}"
    return text.replace("-", "−")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def fmt_interval(iv: Sequence[float], kind: str = "num", signed: bool = False) -> str:
    """'0.42 [0.37, 0.47]' (HTML, the interval muted)."""
    if kind == "pct":
        est, lo, hi = (_pct(v) for v in iv[:3])
    else:
        est, lo, hi = (_num(v, signed=signed) for v in iv[:3])
    return f'<span class="est">{est}</span> <span class="ci">[{lo}, {hi}]</span>'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _severity(fd: float, target: np.ndarray) -> str:
    share = fd / max(max_fd(target), 1e-9)
    return "low" if share < 0.15 else "mid" if share < 0.4 else "high"


# ------------------------------------------------------------------------------------- images


def _thumbnail(path: Path) -> tuple[str, bool] | None:
    """(data URI of a PNG thumbnail, whether to draw it pixelated), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            small = max(im.size) < PIXELATED_BELOW
            if max(im.size) > THUMB_MAX:
                im.thumbnail((THUMB_MAX, THUMB_MAX), Image.LANCZOS)
            buffer = io.BytesIO()
            im.save(buffer, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), small


def image_grid(run: Run, prompt_id: str, thumbs: int = THUMBS, caption: str | None = None) -> str:
    """A grid of the first ``thumbs`` images of a prompt (the same seeds in every run)."""
    shown = run.images.get(prompt_id, [])[:thumbs]
    total = len(run.images.get(prompt_id, []))
    cells = []
    for im in shown:
        tip = f"#{im.index}" + (f" · seed {im.seed}" if im.seed else "") + "".join(
            f"\n{a}: {v or 'abstained'}" for a, v in im.labels.items())
        thumb = _thumbnail(run.path / im.file)
        if thumb is None:
            cells.append(f'<div class="missing" title="{_e(tip)}">missing</div>')
        else:
            uri, pixelated = thumb
            cls = ' class="px"' if pixelated else ""
            cells.append(f'<img{cls} src="{uri}" alt="image {im.index}" title="{_e(tip)}">')
    head = f'<figcaption>{caption}</figcaption>' if caption else ""
    note = f'<div class="note">{len(shown)} of {total} images (indices 0–{max(len(shown) - 1, 0)})</div>'
    return (f'<figure class="grid-wrap">{head}<div class="grid" data-prompt="{_e(prompt_id)}" '
            f'data-run="{_e(run.letter)}">{"".join(cells)}</div>{note}</figure>')


# ------------------------------------------------------------------------------------- charts


def bar_chart(groups: list[str], series: list[tuple[str, Sequence[float], str]],
              target: Sequence[float], attribute: str, prompt_id: str, n: Sequence[int]) -> str:
    """A horizontal bar chart of the group shares (one bar per run and group); the target is a
    dark tick across each group's bars."""
    width = 360
    label_w = min(140, 12 + 7 * max(len(g) for g in groups))
    pct_w = 40  # the shares, right-aligned in a column of their own
    plot_w = width - label_w - pct_w
    bar_h = 14 if len(series) == 1 else 10
    gap = 1 if len(series) == 1 else 3
    band = len(series) * bar_h + (len(series) - 1) * gap
    row_h = band + 10
    top, axis_h = 4, 18
    height = top + row_h * len(groups) + axis_h
    peak = max([*target, *(v for _, values, _ in series for v in values), 0.05])
    step = 0.1 if peak <= 0.5 else 0.25
    xmax = min(1.0, math.ceil(peak / step - 1e-9) * step)
    scale = plot_w / xmax
    x0 = label_w
    parts = [f'<svg class="chart" data-attribute="{_e(attribute)}" data-prompt="{_e(prompt_id)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">',
             f'<title>{_e(attribute)}: share of images per group against the target</title>']
    ticks = [round(i * step, 4) for i in range(int(round(xmax / step)) + 1)]
    bottom = top + row_h * len(groups)
    for t in ticks:
        x = x0 + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="gridline"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 13}" class="axis" text-anchor="middle">'
                     f'{_pct(t)}</text>')
    for gi, group in enumerate(groups):
        y = top + gi * row_h + 5
        parts.append(f'<text x="{x0 - 8}" y="{y + band / 2 + 4:.1f}" class="glabel" '
                     f'text-anchor="end">{_e(group)}</text>')
        for si, (name, values, colour) in enumerate(series):
            v = float(values[gi])
            by = y + si * (bar_h + gap)
            w = max(v * scale, 0.0)
            tip = f"{name + ': ' if name else ''}{group} {_pct(v)} of {n[si]} images (target {_pct(target[gi])})"
            parts.append(f'<rect x="{x0}" y="{by}" width="{w:.1f}" height="{bar_h}" rx="2" '
                         f'fill="{colour}"><title>{_e(tip)}</title></rect>')
            parts.append(f'<text x="{width - 2}" y="{by + bar_h - 1.5:.1f}" class="val" '
                         f'text-anchor="end">{_pct(v)}</text>')
        tx = x0 + float(target[gi]) * scale
        parts.append(f'<line x1="{tx:.1f}" y1="{y - 3}" x2="{tx:.1f}" y2="{y + band + 3}" '
                     f'class="target"><title>target {_pct(target[gi])}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------- page


CSS = """
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--soft:#f1f5f9;--bg:#f6f7f9;--card:#fff;
--accent:#2563eb;--good:#166534;--goodbg:#dcfce7;--bad:#991b1b;--badbg:#fee2e2;--mid:#92400e;--midbg:#fef3c7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif;
-webkit-font-smoothing:antialiased}
.wrap{max-width:1200px;margin:0 auto;padding:0 28px}
header.top{background:#0f172a;color:#f8fafc;padding:30px 0 26px}
header.top h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header.top .sub{color:#94a3b8;margin:0 0 18px;font-size:14px}
.meta{display:flex;flex-wrap:wrap;gap:10px 30px}
.meta div{display:flex;flex-direction:column}
.meta .k{font-size:11px;text-transform:uppercase;letter-spacing:.08em;color:#94a3b8}
.meta .v{font-size:15px;font-weight:560;color:#f8fafc;font-variant-numeric:tabular-nums}
.runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:14px}
.runcard{border:1px solid #334155;border-radius:10px;padding:12px 16px}
.runcard h2{margin:0 0 8px;font-size:16px;display:flex;align-items:center;gap:8px}
.runcard .meta{gap:6px 20px}
.runcard .meta .v{font-size:14px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px}
main{padding:8px 0 40px}
section.card{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:20px 24px;margin:22px 0;box-shadow:0 1px 2px rgba(15,23,42,.04)}
h2.section{font-size:19px;margin:0 0 4px;letter-spacing:-.01em}
p.lead{margin:0 0 14px;color:var(--muted);font-size:14px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th{text-align:left;font-weight:600;font-size:11.5px;text-transform:uppercase;letter-spacing:.06em;
color:var(--muted);border-bottom:1px solid var(--line);padding:8px 12px;white-space:nowrap}
td{padding:9px 12px;border-bottom:1px solid var(--soft);vertical-align:middle;white-space:nowrap}
tr.sub td:first-child{padding-left:28px;color:var(--muted)}
tr.group td{background:#fafbfc;font-weight:600;border-bottom:1px solid var(--line)}
td.name{font-weight:600}
.est{font-weight:600}
.ci{color:var(--muted);font-size:13px}
.dir{color:var(--muted);font-weight:400;font-size:11px;text-transform:none;letter-spacing:0}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;white-space:nowrap}
.improved{background:var(--goodbg);color:var(--good)}
.regressed{background:var(--badbg);color:var(--bad)}
.no-change{background:#e2e8f0;color:#475569}
.sev{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px;vertical-align:1px}
.sev.low{background:#16a34a}.sev.mid{background:#f59e0b}.sev.high{background:#dc2626}
.warn{background:var(--midbg);color:var(--mid);border:1px solid #fde68a;border-radius:10px;
padding:10px 16px;margin:18px 0 0}
.warn ul{margin:4px 0 0;padding-left:20px}
.ranking td{padding:6px 12px}
.ranking a{color:var(--fg);text-decoration:none;border-bottom:1px dotted #94a3b8}
.meter{display:inline-block;width:90px;height:6px;border-radius:3px;background:var(--soft);
vertical-align:middle;margin-right:8px;overflow:hidden}
.meter i{display:block;height:100%;background:#dc2626;border-radius:3px}
article.prompt{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:18px 24px 20px;margin:18px 0;box-shadow:0 1px 2px rgba(15,23,42,.04)}
article.prompt h3{margin:0;font-size:18px;font-weight:620;letter-spacing:-.01em}
article.prompt .rank{color:var(--muted);font-weight:500;margin-right:8px;font-variant-numeric:tabular-nums}
.chips{display:flex;flex-wrap:wrap;gap:6px 8px;margin:8px 0 14px}
.chip{background:var(--soft);border-radius:999px;padding:3px 12px;font-size:13px;font-variant-numeric:tabular-nums}
.body{display:flex;flex-wrap:wrap;gap:18px 34px;align-items:flex-start}
.grids{display:flex;flex-wrap:wrap;gap:18px}
figure.grid-wrap{margin:0}
figure.grid-wrap figcaption{font-size:13px;font-weight:600;margin-bottom:6px;display:flex;align-items:center;gap:6px}
.grid{display:grid;grid-template-columns:repeat(4,72px);gap:4px}
.grids.multi .grid{grid-template-columns:repeat(4,68px)}
.grid img,.grid .missing{width:100%;aspect-ratio:1/1;display:block;border-radius:5px;background:var(--soft)}
.grid img.px{image-rendering:pixelated}
.grid .missing{display:flex;align-items:center;justify-content:center;font-size:10px;color:var(--muted)}
.note{font-size:12px;color:var(--muted);margin-top:6px}
.charts{flex:1 1 360px;display:flex;flex-wrap:wrap;gap:14px 24px}
.chart-box{min-width:0}
.chart-title{font-size:13.5px;margin-bottom:4px}
.chart-title b{font-size:14.5px;margin-right:6px}
.chart-title .m{color:var(--muted)}
svg.chart{display:block;font-family:inherit}
svg .gridline{stroke:#eef1f5;stroke-width:1}
svg .axis{font-size:10px;fill:#94a3b8}
svg .glabel{font-size:12px;fill:#334155}
svg .val{font-size:10.5px;fill:#475569;font-variant-numeric:tabular-nums}
svg .target{stroke:#0f172a;stroke-width:2.5;stroke-linecap:round}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;color:var(--muted);margin:0 0 6px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.legend .tick{display:inline-block;width:3px;height:14px;background:#0f172a;border-radius:2px}
.howto{font-size:13px;color:var(--muted);margin:10px 0 0;line-height:1.6}
.howto b{color:var(--fg)}
footer{color:var(--muted);font-size:12.5px;padding:10px 0 40px}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.92em}
"""


def tradeoff_chart(points: Sequence[dict[str, Any]], x_label: str, y_label: str,
                   title: str) -> str:
    """An SVG scatter of ``points`` ({"label", "x": [est, lo, hi], "y": [est, lo, hi]}) with
    95% interval whiskers on both axes, joined in the given order (e.g. increasing lambda)."""
    width, height, left, bottom, pad = 520, 300, 56, 40, 14
    xs = [v for p in points for v in p["x"]]
    ys = [v for p in points for v in p["y"]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys) * 1.08 or 1.0
    if x1 - x0 < 1e-6:
        x0, x1 = x0 - 0.05, x1 + 0.05
    span = x1 - x0
    x0, x1 = x0 - 0.08 * span, x1 + 0.08 * span

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - pad)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - bottom - pad)

    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - pad}" y2="{height - bottom}" '
             f'stroke="#999"/><line x1="{left}" y1="{pad}" x2="{left}" y2="{height - bottom}" '
             f'stroke="#999"/>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{px(xv):.1f}" y="{height - bottom + 14}" font-size="10" '
                     f'text-anchor="middle" fill="#555">{xv:.2f}</text>'
                     f'<text x="{left - 6}" y="{py(yv) + 3:.1f}" font-size="10" text-anchor="end" '
                     f'fill="#555">{yv:.2f}</text>')
    parts.append(f'<text x="{(left + width - pad) / 2:.0f}" y="{height - 6}" font-size="11" '
                 f'text-anchor="middle">{_e(x_label)}</text><text x="12" y="{(height - bottom) / 2:.0f}" '
                 f'font-size="11" text-anchor="middle" transform="rotate(-90 12 '
                 f'{(height - bottom) / 2:.0f})">{_e(y_label)}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(p['x'][0]):.1f},{py(p['y'][0]):.1f}"
                    for i, p in enumerate(points))
    parts.append(f'<path d="{path}" fill="none" stroke="#8a8a8a" stroke-dasharray="3 3"/>')
    for p, colour in zip(points, _colours(len(points))):
        (x, xlo, xhi), (y, ylo, yhi) = p["x"], p["y"]
        parts.append(f'<g><title>{_e(p["label"])}: {x_label} {x:.3f} [{xlo:.3f}, {xhi:.3f}], '
                     f'{y_label} {y:.3f} [{ylo:.3f}, {yhi:.3f}]</title>'
                     f'<line x1="{px(xlo):.1f}" y1="{py(y):.1f}" x2="{px(xhi):.1f}" y2="{py(y):.1f}" '
                     f'stroke="{colour}"/><line x1="{px(x):.1f}" y1="{py(ylo):.1f}" x2="{px(x):.1f}" '
                     f'y2="{py(yhi):.1f}" stroke="{colour}"/><circle cx="{px(x):.1f}" cy="{py(y):.1f}" '
                     f'r="5" fill="{colour}"/><text x="{px(x) + 7:.1f}" y="{py(y) - 7:.1f}" '
                     f'font-size="11">{_e(p["label"])}</text></g>')
    svg = (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}">{"".join(parts)}</svg>')
    return f'<section class="card" id="tradeoff"><h2 class="section">{_e(title)}</h2>{svg}</section>'


def _page(title: str, header: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="equigen {__version__}">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f'<header class="top"><div class="wrap">{header}</div></header>'
            f'<main><div class="wrap">{body}</div></main>'
            f'<footer><div class="wrap">Made by equigen {__version__} · every figure with a 95% '
            f"bias-corrected bootstrap interval over images · figures over prompts are means over "
            f"prompts · self-contained: works offline.</div></footer></body></html>\n")


def _meta_items(run: Run) -> list[tuple[str, str]]:
    cfg = run.config
    n_images = sum(len(v) for v in run.images.values())
    items = [("model", cfg.get("model", "?")),
             ("fair mapping", cfg.get("fairmap") or "none"),
             ("LoRA", cfg.get("lora") or "none"),
             ("prompt set", run.results.get("prompt_set") or cfg.get("prompts", "?")),
             ("annotator", cfg.get("annotator", "?")),
             ("n per prompt", cfg.get("n", "?")),
             ("guidance", cfg.get("guidance_scale", "?")),
             ("steps", cfg.get("steps", "?")),
             ("sampler", cfg.get("sampler") or "the model's own"),
             ("seed", cfg.get("seed", "?")),
             ("prompts", len(run.results["prompts"])),
             ("images", n_images)]
    return [(k, str(v)) for k, v in items]


def _meta_html(items: list[tuple[str, str]]) -> str:
    return '<div class="meta">' + "".join(
        f'<div><span class="k">{_e(k)}</span><span class="v">{_e(v)}</span></div>'
        for k, v in items) + "</div>"


def _howto(metrics: Sequence[str]) -> str:
    return ('<div class="howto">' + " · ".join(
        f"<b>{METRIC_NAMES[m]}</b> {'↑' if m in HIGHER_IS_BETTER else '↓'} {_e(METRIC_HELP[m])}"
        for m in metrics) + "</div>")


def _prompt_order(run: Run, attributes: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Worst first: by the FD of the first attribute the prompt does not name; prompts that name
    every attribute come last, lowest accuracy first."""
    prompts = run.prompts

    def key(pid: str) -> tuple[int, float]:
        entry = prompts[pid]
        for a in attributes:
            block = entry["attributes"].get(a, {})
            if "fd" in block:
                return 0, -float(block["fd"][0])
        accuracies = [e["accuracy"][0] for e in entry.get("expect", {}).values()]
        return 1, min(accuracies) if accuracies else 0.0

    return sorted(ids, key=key)


def _rank_key_fd(run: Run, pid: str, attributes: Sequence[str]) -> tuple[str, float] | None:
    entry = run.prompts[pid]
    for a in attributes:
        block = entry["attributes"].get(a, {})
        if "fd" in block:
            return a, float(block["fd"][0])
    return None


def _chart_target(run: Run, attribute: str, named: str | None) -> list[float]:
    """The attribute's target, or all images in the named group when the prompt names one."""
    if named:
        return [float(g == named) for g in run.groups[attribute]]
    return run.target(attribute).tolist()


def _chart_box(attribute: str, groups: list[str], series: list[tuple[str, Sequence[float], str]],
               target: Sequence[float], pid: str, ns: Sequence[int], abstained: Sequence[float],
               named: str | None, letters: Sequence[str]) -> str:
    if len(letters) > 1 and len(set(ns)) == 1:
        count = f"n={ns[0]} each"
    elif len(letters) > 1:
        count = "n=" + " · ".join(f"{n} ({l})" for n, l in zip(ns, letters))
    else:
        count = f"n={ns[0]}"
    if any(abstained):
        count += " · abstained " + " · ".join(
            _pct(x) + (f" ({l})" if letters else "") for x, l in zip(abstained, letters or [""]))
    elif not letters:
        count += " · abstained 0%"
    note = f'<span class="m"> · named: target {_e(named)}</span>' if named else ""
    return (f'<div class="chart-box"><div class="chart-title"><b>{_e(attribute)}</b>'
            f'<span class="m">{count}</span>{note}</div>'
            + bar_chart(groups, series, target, attribute, pid, ns) + "</div>")


def _compare_chip(attribute: str, named: str | None, c: Compared) -> str:
    """'tone FD 0.71 → 0.11 [Δ −0.60 [−0.69, −0.42]]' with the verdict as colour."""
    metric = "accuracy" if named else "fd"
    show = _pct if named else _num
    values = " → ".join(show(v[0]) for v in c.values)
    deltas = []
    for d in c.deltas:
        v = verdict(metric, d)
        if named:
            est, lo, hi = (_num(100 * x, 0, signed=True) for x in d)
            text = f"Δ {est} pts [{lo}, {hi}]"
        else:
            est, lo, hi = (_num(x, signed=True) for x in d)
            text = f"Δ {est} [{lo}, {hi}]"
        deltas.append(f' <span class="badge {v}" data-verdict="{v}">{text}</span>')
    what = f"named <b>{_e(named)}</b>: accuracy" if named else "FD"
    return f'<span class="chip">{_e(attribute)} {what} {values}{"".join(deltas)}</span>'


# ------------------------------------------------------------------------------- one run


def _single_report(run: Run, title: str | None, thumbs: int) -> str:
    results = run.results
    summary = results.get("summary", {})
    prompt_set = results.get("prompt_set", "")
    title = title or f"Audit · {prompt_set or run.name}"
    header = (f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(run.path)}</p>"
              + _meta_html(_meta_items(run)))

    # summary table
    fairness = summary.get("fairness", {})
    inter = summary.get("intersectional", {})
    metrics = [m for m in ("fd", "kl", "mad", "entropy")
               if any(m in block for block in [*fairness.values(), *inter.values()])]
    rows = []
    for a, block in fairness.items():
        target = run.target(a)
        sev = _severity(block["fd"][0], target) if "fd" in block else ""
        cells = "".join(f"<td>{fmt_interval(block[m]) if m in block else '–'}</td>" for m in metrics)
        rows.append(f'<tr data-attribute="{_e(a)}"><td class="name"><span class="sev {sev}"></span>'
                    f'{_e(a)}</td><td>{block.get("prompts", "")}</td>{cells}</tr>')
    if inter:
        rows.append(f'<tr class="group"><td colspan="{len(metrics) + 2}">intersections '
                    f'<span class="dir">(joint groups against the product of the targets)</span>'
                    f'</td></tr>')
        for pair, block in inter.items():
            cells = "".join(f"<td>{fmt_interval(block[m]) if m in block else '–'}</td>"
                            for m in metrics)
            rows.append(f'<tr class="sub" data-attribute="{_e(pair)}"><td>{_e(pair.replace(" x ", " × "))}'
                        f"</td><td></td>{cells}</tr>")
    heads = "".join(f'<th>{METRIC_NAMES[m]} <span class="dir">{"↑" if m in HIGHER_IS_BETTER else "↓"}'
                    f"</span></th>" for m in metrics)
    body = []
    if rows:
        body.append(f'<section class="card" id="summary"><h2 class="section">Representation</h2>'
                    f'<p class="lead">Mean over the prompts that do not name the attribute; 95% '
                    f'intervals in brackets.</p><table class="metrics"><thead><tr><th>attribute</th>'
                    f"<th>prompts</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                    f"{_howto(metrics)}</section>")
    alignment = summary.get("alignment", {})
    if alignment:
        named = {a: sum(1 for p in results["prompts"] if a in p.get("expect", {})) for a in alignment}
        arows = "".join(f'<tr data-attribute="{_e(a)}"><td class="name">{_e(a)}</td><td>{named[a]}</td>'
                        f"<td>{fmt_interval(iv, 'pct')}</td></tr>" for a, iv in alignment.items())
        body.append(f'<section class="card" id="alignment"><h2 class="section">Alignment</h2>'
                    f'<p class="lead">Does the model draw what the prompt names? Share of images '
                    f"annotated as the named group.</p><table class=\"metrics\"><thead><tr>"
                    f"<th>attribute</th><th>prompts</th><th>accuracy ↑</th></tr></thead>"
                    f"<tbody>{arows}</tbody></table></section>")

    attributes = run.attributes
    order = _prompt_order(run, attributes, [p["id"] for p in results["prompts"]])
    body.append(_ranking(order, [run], attributes))
    body.append(f'<h2 class="section" style="margin-top:30px">Prompts, worst first</h2>'
                f'<div class="legend"><span><i class="swatch" style="background:{SINGLE_COLOUR}">'
                f'</i>share of images</span><span><i class="tick"></i>target</span></div>')
    prompts = run.prompts
    for rank, pid in enumerate(order, start=1):
        entry = prompts[pid]
        chips, charts = [], []
        for a in attributes:
            block = entry["attributes"][a]
            named = _named(run, pid).get(a)
            if named:
                acc = entry["expect"][a]["accuracy"]
                chips.append(f'<span class="chip">{_e(a)} named <b>{_e(named)}</b>: accuracy '
                             f'{fmt_interval(acc, "pct")}</span>')
            elif "fd" in block:
                sev = _severity(block["fd"][0], np.asarray(block["target"], float))
                chips.append(f'<span class="chip"><span class="sev {sev}"></span>{_e(a)} FD '
                             f"{fmt_interval(block['fd'])}</span>")
            else:
                chips.append(f'<span class="chip">{_e(a)}: every image abstained</span>')
            charts.append(_chart_box(a, run.groups[a], [("", block["distribution"], SINGLE_COLOUR)],
                                     _chart_target(run, a, named), pid, [block["n"]],
                                     [block["abstained"]], named, []))
        body.append(f'<article class="prompt" id="p-{_e(pid)}" data-prompt="{_e(pid)}">'
                    f'<h3><span class="rank">{rank}</span>{_e(entry["text"])}</h3>'
                    f'<div class="chips">{"".join(chips)}</div><div class="body">'
                    f'<div class="grids">{image_grid(run, pid, thumbs)}</div>'
                    f'<div class="charts">{"".join(charts)}</div></div></article>')
    return _page(title, header, "".join(body))


def _ranking(order: Sequence[str], runs: Sequence[Run], attributes: Sequence[str],
             per_prompt: dict[str, dict[str, Compared]] | None = None) -> str:
    """A compact list of every prompt, worst first, linking to its section."""
    if len(order) < 2:
        return ""
    base = runs[0]
    rows = []
    for rank, pid in enumerate(order, start=1):
        found = _rank_key_fd(base, pid, attributes)
        text = _e(base.prompts[pid]["text"])
        if found is None:
            cells = '<td colspan="2" class="ci">names every attribute</td>'
        else:
            a, fd = found
            share = min(1.0, fd / max(max_fd(base.target(a)), 1e-9))
            cells = (f'<td>{_e(a)}</td><td><span class="meter"><i style="width:{100 * share:.0f}%">'
                     f'</i></span>{_num(fd)}')
            if per_prompt and pid in per_prompt and a in per_prompt[pid]:
                c = per_prompt[pid][a]
                for r, v in zip(runs[1:], c.values[1:]):
                    cells += f' <span class="ci">→ {_num(v[0])} ({_e(r.letter)})</span>'
            cells += "</td>"
        rows.append(f'<tr><td class="ci">{rank}</td><td><a href="#p-{_e(pid)}">{text}</a></td>{cells}</tr>')
    return (f'<section class="card ranking" id="ranking"><h2 class="section">All prompts</h2>'
            f'<p class="lead">Worst first, by the FD of the first attribute the prompt does not '
            f'name{" (in run A)" if len(runs) > 1 else ""}; click one to jump to it.</p>'
            f'<table><thead><tr><th>#</th><th>prompt</th><th>attribute</th><th>FD ↓</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


# ------------------------------------------------------------------------------- comparison


@dataclass
class _Comparison:
    shared: list[str]
    attributes: list[str]
    warnings: list[str] = field(default_factory=list)
    fairness: dict[str, dict[str, Compared]] = field(default_factory=dict)  # attribute -> metric
    intersectional: dict[str, dict[str, Compared]] = field(default_factory=dict)
    alignment: dict[str, Compared] = field(default_factory=dict)
    prompts: dict[str, dict[str, Compared]] = field(default_factory=dict)  # pid -> attr -> FD/accuracy


def _named(run: Run, pid: str) -> dict[str, str]:
    """The groups a prompt names: attribute -> group."""
    return {a: e["group"] for a, e in run.prompts[pid].get("expect", {}).items()}


def compare_runs(runs: Sequence[Run], n_boot: int = 1000, seed: int = 0) -> _Comparison:
    """Every figure of every run on the prompts they share, and each run's change from the first."""
    base = runs[0]
    shared = [pid for pid in base.prompts if all(pid in r.prompts for r in runs[1:])]
    if not shared:
        raise EquigenError("the runs share no prompts: " + "; ".join(
            f"{r.path} has {len(r.prompts)} ({', '.join(list(r.prompts)[:2])}"
            f"{', ...' if len(r.prompts) > 2 else ''})" for r in runs)
            + " - a before/after report compares the same prompts")
    warnings = []
    for key, what in (("seed", "seeds"), ("n", "images per prompt (n)")):
        values = [r.config.get(key) for r in runs]
        if len(set(map(str, values))) > 1:
            warnings.append(f"The runs differ in {what}: " + ", ".join(
                f"{r.letter} {v}" for r, v in zip(runs, values))
                + (" - the images are not the same draws, so differences mix the change with "
                   "chance." if key == "seed" else " - intervals differ in width."))
    for key in ("guidance_scale", "steps", "sampler", "annotator"):
        values = [r.config.get(key) for r in runs]
        if len(set(map(str, values))) > 1:
            warnings.append(f"The runs differ in {key}: " + ", ".join(
                f"{r.letter} {v}" for r, v in zip(runs, values)) + ".")
    for r in runs:
        extra = len(r.prompts) - len(shared)
        if extra:
            warnings.append(f"{r.letter} ({r.name}) has {extra} prompt(s) the other run(s) lack; "
                            f"they are left out.")
    attributes = []
    for a in base.attributes:
        if not all(a in r.groups for r in runs[1:]):
            warnings.append(f"Attribute {a!r} is not measured in every run; left out.")
        elif any(r.groups[a] != base.groups[a] for r in runs[1:]):
            warnings.append(f"Attribute {a!r} has different groups in the runs; left out.")
        elif any(not np.allclose(r.target(a), base.target(a)) for r in runs[1:]):
            warnings.append(f"Attribute {a!r} has different targets in the runs; left out.")
        else:
            attributes.append(a)
    for pid in shared:
        if any(_named(r, pid) != _named(base, pid) for r in runs[1:]):
            warnings.append(f"Prompt {base.prompts[pid]['text']!r} names different attributes "
                            "in the runs; run A's are used.")
    rng = np.random.default_rng(seed)
    out = _Comparison(shared, attributes, warnings)
    expect = {pid: _named(base, pid) for pid in shared}

    def kept(r: Run, pid: str, a: str) -> np.ndarray:
        l = r.labels[pid][a]
        return l[l != ABSTAINED]

    for a in attributes:
        k, target = len(base.groups[a]), base.target(a)
        metrics = fairness_metrics(target)
        neutral = [pid for pid in shared if a not in expect[pid]
                   and all(len(kept(r, pid, a)) for r in runs)]
        if neutral:
            out.fairness[a] = compare_fairness([[kept(r, pid, a) for pid in neutral] for r in runs],
                                               k, target, metrics, n_boot, rng)
        named = [pid for pid in shared if a in expect[pid]]
        if named:
            wanted = {pid: base.groups[a].index(expect[pid][a]) for pid in named}
            out.alignment[a] = compare_accuracy(
                [[(r.labels[pid][a] == wanted[pid]).astype(float) for pid in named] for r in runs],
                n_boot, rng)
    for a, b in itertools.combinations(attributes, 2):
        ka, kb = len(base.groups[a]), len(base.groups[b])
        per_run = []
        pids = [pid for pid in shared if a not in expect[pid] and b not in expect[pid]]
        for r in runs:
            joint = []
            for pid in pids:
                la, lb = r.labels[pid][a], r.labels[pid][b]
                keep = (la != ABSTAINED) & (lb != ABSTAINED)
                joint.append(joint_labels(la[keep], lb[keep], kb))
            per_run.append(joint)
        pids_ok = [j for j in range(len(pids)) if all(len(pr[j]) for pr in per_run)]
        if pids_ok:
            target = joint_target(base.target(a), base.target(b))
            out.intersectional[f"{a} x {b}"] = compare_fairness(
                [[pr[j] for j in pids_ok] for pr in per_run], ka * kb, target,
                fairness_metrics(target), n_boot, rng)
    for pid in shared:
        per: dict[str, Compared] = {}
        for a in attributes:
            if a in expect[pid]:
                wanted_i = base.groups[a].index(expect[pid][a])
                per[a] = compare_accuracy([[(r.labels[pid][a] == wanted_i).astype(float)]
                                           for r in runs], n_boot, rng)
            elif all(len(kept(r, pid, a)) for r in runs):
                per[a] = compare_fairness([[kept(r, pid, a)] for r in runs], len(base.groups[a]),
                                          base.target(a), ["fd"], n_boot, rng)["fd"]
        out.prompts[pid] = per
    return out


def _delta_cell(metric: str, delta: Interval, kind: str = "num") -> str:
    v = verdict(metric, delta)
    label = {"improved": "improved", "regressed": "regressed", "no-change": "no clear change"}[v]
    if kind == "pct":
        est, lo, hi = (f"{_num(100 * x, 0, signed=True)} pts" if i == 0 else _num(100 * x, 0, signed=True)
                       for i, x in enumerate(delta))
        text = f'<span class="est">{est}</span> <span class="ci">[{lo}, {hi}]</span>'
    else:
        text = fmt_interval(delta, signed=True)
    return (f'<td>{text}</td><td><span class="badge {v}" data-verdict="{v}" data-metric="{metric}">'
            f"{label}</span></td>")


def _comparison_report(runs: Sequence[Run], title: str | None, thumbs: int, n_boot: int,
                       extra_html: str = "") -> str:
    base = runs[0]
    cmp_ = compare_runs(runs, n_boot=n_boot)
    names = " → ".join(f"{r.letter} {r.name}" for r in runs)
    title = title or f"Before / after · {' vs '.join(r.name for r in runs)}"
    cards = []
    for r, colour in zip(runs, _colours(len(runs))):
        cards.append(f'<div class="runcard"><h2><i class="swatch" style="background:{colour}"></i>'
                     f'{_e(r.letter)} · {_e(r.name)}</h2>{_meta_html(_meta_items(r))}</div>')
    header = (f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(names)} · {len(cmp_.shared)} shared "
              f"prompt(s)</p><div class=\"runs\">{''.join(cards)}</div>")
    if cmp_.warnings:
        header += ('<div class="warn"><b>Check before trusting the deltas</b><ul>'
                   + "".join(f"<li>{_e(w)}</li>" for w in cmp_.warnings) + "</ul></div>")

    later = runs[1:]
    heads = "".join(f"<th>{_e(r.letter)}</th>" for r in runs) + "".join(
        f"<th>Δ {_e(r.letter)} − {_e(base.letter)} <span class=\"dir\">95% CI</span></th><th></th>"
        for r in later)
    rows = []
    all_metrics: list[str] = []

    def metric_rows_html(label: str, blocks: dict[str, Compared], sub: bool, attr_key: str) -> None:
        first = True
        for m, c in blocks.items():
            if m not in all_metrics:
                all_metrics.append(m)
            name = (f"{_e(label)}" if first else "")
            cells = "".join(f"<td>{fmt_interval(v)}</td>" for v in c.values) + "".join(
                _delta_cell(m, d) for d in c.deltas)
            cls = ' class="sub"' if sub else ""
            rows.append(f'<tr{cls} data-attribute="{_e(attr_key)}" data-metric="{m}">'
                        f'<td class="name">{name}</td><td>{METRIC_NAMES[m]} <span class="dir">'
                        f'{"↑" if m in HIGHER_IS_BETTER else "↓"}</span></td>{cells}</tr>')
            first = False

    for a, blocks in cmp_.fairness.items():
        metric_rows_html(a, blocks, False, a)
    if cmp_.intersectional:
        rows.append(f'<tr class="group"><td colspan="{2 + len(runs) + 2 * len(later)}">intersections '
                    f'<span class="dir">(joint groups against the product of the targets)</span>'
                    f"</td></tr>")
        for pair, blocks in cmp_.intersectional.items():
            metric_rows_html(pair.replace(" x ", " × "), blocks, True, pair)
    body = [extra_html] if extra_html else []
    if rows:
        body.append(f'<section class="card" id="summary"><h2 class="section">Representation, before '
                    f"and after</h2><p class=\"lead\">Mean over the {len(cmp_.shared)} shared "
                    f"prompts that do not name the attribute, recomputed from each run's "
                    f"annotations. A change counts when its 95% interval excludes zero.</p>"
                    f'<table class="metrics compare"><thead><tr><th>attribute</th><th>metric</th>'
                    f"{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                    f"{_howto(all_metrics)}</section>")
    if cmp_.alignment:
        arows = []
        for a, c in cmp_.alignment.items():
            cells = "".join(f"<td>{fmt_interval(v, 'pct')}</td>" for v in c.values) + "".join(
                _delta_cell("accuracy", d, "pct") for d in c.deltas)
            arows.append(f'<tr data-attribute="{_e(a)}" data-metric="accuracy"><td class="name">'
                         f"{_e(a)}</td><td>Accuracy <span class=\"dir\">↑</span></td>{cells}</tr>")
        body.append(f'<section class="card" id="alignment"><h2 class="section">Alignment, before and '
                    f'after</h2><p class="lead">Share of images showing the group the prompt names.'
                    f'</p><table class="metrics compare"><thead><tr><th>attribute</th><th>metric</th>'
                    f"{heads}</tr></thead><tbody>{''.join(arows)}</tbody></table></section>")

    attributes = cmp_.attributes
    order = _prompt_order(base, attributes, cmp_.shared)
    body.append(_ranking(order, runs, attributes, cmp_.prompts))
    legend = "".join(f'<span><i class="swatch" style="background:{c}"></i>{_e(r.letter)} · '
                     f"{_e(r.name)}</span>" for r, c in zip(runs, _colours(len(runs))))
    body.append(f'<h2 class="section" style="margin-top:30px">Prompts, worst first (in {base.letter})'
                f'</h2><div class="legend">{legend}<span><i class="tick"></i>target</span></div>')
    for rank, pid in enumerate(order, start=1):
        entry = base.prompts[pid]
        chips, charts = [], []
        for a in attributes:
            c = cmp_.prompts[pid].get(a)
            named = _named(base, pid).get(a)
            if c is not None:
                chips.append(_compare_chip(a, named, c))
            k = len(base.groups[a])
            series, ns, abstained = [], [], []
            for r, colour in zip(runs, _colours(len(runs))):
                labels = r.labels[pid][a]
                kept = labels[labels != ABSTAINED]
                series.append((r.letter, distribution(kept, k).tolist(), colour))
                ns.append(len(kept))
                abstained.append(float(np.mean(labels == ABSTAINED)))
            target = _chart_target(base, a, named)
            charts.append(_chart_box(a, base.groups[a], series, target, pid, ns, abstained, named,
                                     [r.letter for r in runs]))
        grids = "".join(
            image_grid(r, pid, thumbs, caption=f'<i class="swatch" style="background:{c}"></i>'
                                               f"{_e(r.letter)} · {_e(r.name)}")
            for r, c in zip(runs, _colours(len(runs))))
        body.append(f'<article class="prompt" id="p-{_e(pid)}" data-prompt="{_e(pid)}">'
                    f'<h3><span class="rank">{rank}</span>{_e(entry["text"])}</h3>'
                    f'<div class="chips">{"".join(chips)}</div>'
                    f'<div class="body"><div class="grids multi">{grids}</div>'
                    f'<div class="charts">{"".join(charts)}</div></div></article>')
    return _page(title, header, "".join(body))


# --------------------------------------------------------------------------------------- entry


def write_report(runs: list[Path], out: Path, title: str | None = None, thumbs: int = THUMBS,
                 n_boot: int = 1000, extra_html: str = "") -> Path:
    """Write one self-contained HTML report of one audit run, or a before/after comparison of
    several (the first is the baseline); return ``out``. ``extra_html`` (e.g. a
    :func:`tradeoff_chart`) goes under the header of a comparison."""
    if not runs:
        raise EquigenError("give at least one audit folder")
    loaded = [load_run(Path(r)) for r in runs]
    names = [r.name for r in loaded]
    for i, r in enumerate(loaded):
        r.letter = chr(ord("A") + i) if i < 26 else f"R{i + 1}"
        if names.count(r.name) > 1:  # two folders with one name: say which is which
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    if len(loaded) == 1:
        page = _single_report(loaded[0], title, thumbs)
    else:
        page = _comparison_report(loaded, title, thumbs, n_boot, extra_html)
    out = Path(out)
    write_text_atomic(out, page)
    return out
