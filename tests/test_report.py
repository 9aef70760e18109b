"""The HTML report: built from synthetic audit folders with known labels, and rendered in headless
Chromium (Debian's ``chromium``; ``scripts/ensure-chromium`` installs it in ``make test``)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from equigen.audit.metrics import METRICS, uniform
from equigen.audit.prompts import AttributeSpec, Prompt, PromptSet, prompt_id, prompt_seed
from equigen.audit.report import (
    compare_runs,
    load_run,
    metric_rows,
    resampled_distributions,
    verdict,
    write_report,
)
from equigen.audit.results import compute_results
from equigen.errors import EquigenError

CHROMIUM = Path("/usr/bin/chromium")

TONES = ["very light", "light", "brown", "dark"]
SETTINGS = ["city", "village", "coast"]
TONE_RGB = [(244, 208, 177), (214, 165, 120), (150, 100, 62), (84, 54, 38)]
SETTING_RGB = [(148, 163, 184), (134, 239, 172), (125, 211, 252)]


# ------------------------------------------------------------------------- synthetic audit runs


def make_audit(out: Path, probs: dict[str, dict[str, list[float]]], n: int = 40, seed: int = 0,
               size: int = 16, named: bool = True, rng_seed: int = 0, model: str = "synthetic"
               ) -> Path:
    """An audit folder as ``equigen audit`` writes it, with labels drawn from known shares.

    ``probs[occupation][attribute]``: the shares each neutral prompt's labels are drawn from.
    Images are tiny faces (tone) on a background (setting), so the grids can be checked by eye.
    """
    attributes = {"tone": AttributeSpec(groups=TONES),
                  "setting": AttributeSpec(groups=SETTINGS)}
    prompts = [Prompt(prompt_id(f"a photo of a {o}"), f"a photo of a {o}") for o in probs]
    if named:
        text = "a photo of a dark-skinned doctor"
        prompts.append(Prompt(prompt_id(text), text, {}, {"tone": "dark"}))
    prompt_set = PromptSet("synthetic occupations", attributes, prompts)
    rng = np.random.default_rng(rng_seed)
    labels, rows = {}, []
    for prompt in prompts:
        shares = probs.get(prompt.text.removeprefix("a photo of a "),
                           {"tone": [0.05, 0.05, 0.1, 0.8], "setting": [1 / 3] * 3})
        labels[prompt.id] = {a: rng.choice(len(attributes[a].groups), size=n, p=shares[a])
                             for a in attributes}
        folder = out / "images" / prompt.id
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            t, s = labels[prompt.id]["tone"][i], labels[prompt.id]["setting"][i]
            image = Image.new("RGB", (size, size), SETTING_RGB[s])
            draw = ImageDraw.Draw(image)
            c, r = size / 2, size * 0.3
            draw.rectangle([c - r * 1.1, size * 0.72, c + r * 1.1, size], fill=(51, 65, 85))
            draw.ellipse([c - r, c - r * 1.15, c + r, c + r * 0.85], fill=TONE_RGB[t])
            file = f"images/{prompt.id}/{i:04d}.png"
            image.save(out / file)
            row = {"prompt_id": prompt.id, "prompt": prompt.text, "index": i,
                   "seed": prompt_seed(seed, prompt.text, i), "file": file}
            for a, spec in attributes.items():
                g = labels[prompt.id][a][i]
                row[a] = spec.groups[g]
                row.update({f"p_{a}_{name}": float(j == g) for j, name in enumerate(spec.groups)})
            rows.append(row)
    with (out / "annotations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    results = compute_results(prompt_set, labels, n_boot=200, seed=seed)
    results["config"] = {"model": model, "prompts": "synthetic.yaml", "annotator": "oracle",
                         "n": n, "seed": seed, "guidance_scale": 4.0, "steps": 25}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return out


SKEWED = {  # run A: the model's bias, worst for builders
    "doctor": {"tone": [0.6, 0.3, 0.05, 0.05], "setting": [0.7, 0.2, 0.1]},
    "builder": {"tone": [0.85, 0.1, 0.05, 0.0], "setting": [0.2, 0.6, 0.2]},
    "teacher": {"tone": [0.4, 0.3, 0.2, 0.1], "setting": [0.4, 0.3, 0.3]},
}
BALANCED = {o: {"tone": [0.25] * 4, "setting": [1 / 3] * 3} for o in SKEWED}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audits")
    a = make_audit(root / "before", SKEWED, rng_seed=1)
    b = make_audit(root / "after", BALANCED, rng_seed=2)
    same = root / "again"
    shutil.copytree(a, same)
    return {"a": a, "b": b, "same": same}


@pytest.fixture(scope="module")
def single_html(runs, tmp_path_factory) -> str:
    return write_report([runs["a"]], runs["a"] / "report.html").read_text()


@pytest.fixture(scope="module")
def pair_html(runs, tmp_path_factory) -> tuple[Path, str]:
    out = write_report([runs["a"], runs["b"]], tmp_path_factory.mktemp("pair") / "report.html")
    return out, out.read_text()


def _sections(page: str) -> list[str]:
    return re.findall(r'<article class="prompt" id="p-[^"]+" data-prompt="([^"]+)"', page)


# --------------------------------------------------------------------------------- one run


def test_single_report_has_grid_and_chart_per_prompt_and_attribute(runs, single_html):
    results = json.loads((runs["a"] / "results.json").read_text())
    ids = [p["id"] for p in results["prompts"]]
    assert sorted(_sections(single_html)) == sorted(ids)
    for pid in ids:
        grid = re.search(rf'<div class="grid" data-prompt="{pid}" data-run="A">(.*?)</div>',
                         single_html, re.S).group(1)
        assert grid.count("<img") == 16  # a sample of 16 of the 40 images
        for attribute in ("tone", "setting"):
            assert f'<svg class="chart" data-attribute="{attribute}" data-prompt="{pid}"' in single_html
    assert 'class="target"' in single_html  # target markers on the bars
    # self-contained: no URL to fetch, images inline
    assert not re.search(r'(src|href)="(https?:)?//', single_html)
    assert "<script" not in single_html
    assert "data:image/png;base64," in single_html


def test_single_report_summary_numbers_and_header(runs, single_html):
    results = json.loads((runs["a"] / "results.json").read_text())
    fd = results["summary"]["fairness"]["tone"]["fd"]
    assert f'<span class="est">{fd[0]:.2f}</span> <span class="ci">[{fd[1]:.2f}, {fd[2]:.2f}]</span>' \
        in single_html
    for metric in ("FD", "KL", "MAD", "Entropy"):
        assert f"<th>{metric} " in single_html
    accuracy = results["summary"]["alignment"]["tone"]
    assert f"{100 * accuracy[0]:.0f}%" in single_html
    for value in ("synthetic", "synthetic occupations", "40", "4.0"):
        assert f'<span class="v">{value}</span>' in single_html


def test_single_report_orders_prompts_worst_first(runs, single_html):
    results = json.loads((runs["a"] / "results.json").read_text())
    fd = {p["id"]: p["attributes"]["tone"].get("fd", [None])[0] for p in results["prompts"]}
    order = _sections(single_html)
    neutral = [pid for pid in order if fd[pid] is not None]
    assert [fd[p] for p in neutral] == sorted((fd[p] for p in neutral), reverse=True)
    assert order[:len(neutral)] == neutral  # the named prompt (no tone FD) comes last
    assert results["prompts"][1]["text"] == "a photo of a builder"
    assert order[0] == results["prompts"][1]["id"]  # the builders are the most skewed


# ------------------------------------------------------------------------------- comparison


def test_comparison_marks_clear_improvement(pair_html):
    _, page = pair_html
    cells = re.findall(r'<tr data-attribute="tone" data-metric="(\w+)">.*?data-verdict="([\w-]+)"',
                       page)
    # run B's neutral prompts are balanced; its named prompt is drawn as in A
    assert dict(cells) == {"fd": "improved", "kl": "improved", "mad": "improved",
                           "entropy": "improved", "accuracy": "no-change"}
    assert "Δ B − A" in page
    assert "Check before trusting" not in page  # same seeds, same n: no warning
    pid = prompt_id("a photo of a builder")
    assert f'data-prompt="{pid}" data-run="A"' in page and f'data-prompt="{pid}" data-run="B"' in page


def test_identical_runs_show_no_clear_change(runs):
    loaded = [load_run(runs["a"]), load_run(runs["same"])]
    result = compare_runs(loaded, n_boot=500)
    verdicts = [verdict(m, d) for blocks in (*result.fairness.values(), *result.intersectional.values())
                for m, c in blocks.items() for d in c.deltas]
    verdicts += [verdict("accuracy", d) for c in result.alignment.values() for d in c.deltas]
    assert verdicts and set(verdicts) == {"no-change"}


def test_comparison_values_match_results_json(runs):
    """Run A's figures in a comparison are the ones ``compute_results`` wrote."""
    result = compare_runs([load_run(runs["a"]), load_run(runs["b"])], n_boot=200)
    for run, column in ((runs["a"], 0), (runs["b"], 1)):
        summary = json.loads((run / "results.json").read_text())["summary"]
        for metric, c in result.fairness["tone"].items():
            assert c.values[column][0] == pytest.approx(summary["fairness"]["tone"][metric][0], abs=1e-4)
        assert result.alignment["tone"].values[column][0] == pytest.approx(
            summary["alignment"]["tone"][0], abs=1e-4)
        for pair, blocks in result.intersectional.items():
            assert blocks["fd"].values[column][0] == pytest.approx(
                summary["intersectional"][pair]["fd"][0], abs=1e-4)


def test_comparison_warns_when_seeds_differ(runs, tmp_path):
    other = make_audit(tmp_path / "other-seed", BALANCED, seed=7, n=20)
    page = write_report([runs["a"], other], tmp_path / "r.html").read_text()
    assert "Check before trusting" in page and "differ in seeds" in page
    assert "images per prompt (n)" in page


def test_vectorised_metrics_equal_metrics_module():
    rng = np.random.default_rng(0)
    dists = rng.dirichlet(np.ones(4) * 0.5, size=50)
    dists[:5, 1] = 0  # zero shares
    dists[:5] /= dists[:5].sum(axis=1, keepdims=True)
    for target in (uniform(4), np.array([0.1, 0.2, 0.3, 0.4])):
        for name in ("fd", "kl", "mad", "entropy", "tv"):
            expected = [METRICS[name](row, target) for row in dists]
            assert metric_rows(name, dists, target) == pytest.approx(expected, abs=1e-12)


def test_report_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, equigen.audit.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_resampled_distributions_are_the_image_bootstrap():
    labels = np.array([0] * 30 + [1] * 10)
    draws = resampled_distributions(labels, 3, 20000, np.random.default_rng(0))
    assert draws.shape == (20000, 3) and (draws[:, 2] == 0).all()
    assert draws[:, 0].mean() == pytest.approx(0.75, abs=0.005)
    assert draws[:, 0].std() == pytest.approx(np.sqrt(0.75 * 0.25 / 40), rel=0.05)


def test_errors_for_non_audit_folders_and_disjoint_runs(runs, tmp_path):
    with pytest.raises(EquigenError, match="not an audit run"):
        write_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(EquigenError, match="no such folder"):
        write_report([tmp_path / "nope"], tmp_path / "r.html")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "annotations.csv").write_text("prompt_id\n")
    with pytest.raises(EquigenError, match="not an audit results file"):
        write_report([tmp_path], tmp_path / "r.html")
    other = make_audit(tmp_path / "other", {"pilot": BALANCED["doctor"]}, named=False, n=8)
    with pytest.raises(EquigenError, match="share no prompts"):
        write_report([runs["a"], other], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report_default_out(runs, tmp_path, monkeypatch):
    from equigen.cli.report import report

    monkeypatch.chdir(tmp_path)
    report([runs["a"], runs["b"]], out=None, title=None)
    assert (tmp_path / "report.html").is_file()
    single = tmp_path / "single"
    shutil.copytree(runs["b"], single)
    report([single], out=None, title="After")
    assert "<title>After</title>" in (single / "report.html").read_text()


# ------------------------------------------------------------------------- headless Chromium


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    it reads commands from fd 3 and writes replies and events to fd 4, NUL-terminated JSON).

    Every console call, uncaught exception and browser log entry (e.g. a resource that failed to
    load) arrives as an event, with its level, so "no console errors" is checked exactly.
    """

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--mute-audio"]

    def __init__(self, exe: Path = CHROMIUM, timeout: float = 60):
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self.timeout = timeout
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()

        def onto_fds_3_and_4() -> None:  # runs in the child, before exec
            r, w = os.dup(to_child_r), os.dup(from_child_w)  # both > 4: the dup2s cannot clash
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [str(exe), *self.FLAGS, f"--user-data-dir={self.profile.name}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=onto_fds_3_and_4)
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = os.fdopen(to_child_w, "wb", buffering=0)
        self._in = os.fdopen(from_child_r, "rb", buffering=0)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=True)

    def _message(self) -> dict:
        import select

        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if not select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer")
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, path: Path, width: int = 1280, height: int = 2000) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session=True, url=path.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message())

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", session=True, expression=expression,
                         returnByValue=True)["result"]["value"]

    def screenshot(self, full_page: bool = False) -> bytes:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", session=True, **params)["data"])

    def dom(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and error/warning log entries."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"uncaught: {details.get('exception', {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: "
                             + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                found.append(f"{entry['source']} {entry['level']}: {entry['text']} {entry.get('url', '')}")
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._in.close()
        self.profile.cleanup()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (/usr/bin/chromium missing): run "
                    "scripts/ensure-chromium as root (make test does)")
    chromium = Chromium()
    yield chromium
    chromium.close()


def _non_blank(png: bytes) -> tuple[int, int, float]:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    return image.shape[1], image.shape[0], float(image.std())


CHECK_PAGE = """JSON.stringify({
  prompts: document.querySelectorAll('article.prompt').length,
  grids: [...document.querySelectorAll('.grid')].map(g => g.querySelectorAll('img').length),
  charts: document.querySelectorAll('svg.chart').length,
  bars: document.querySelectorAll('svg.chart rect').length,
  broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
  verdicts: [...document.querySelectorAll('[data-verdict]')].map(e => e.dataset.verdict),
  chartWidth: Math.round(document.querySelector('svg.chart').getBoundingClientRect().width),
  gridWidth: Math.round(document.querySelector('.grid img').getBoundingClientRect().width),
})"""


def test_browser_renders_reports_without_console_errors(runs, pair_html, browser, tmp_path):
    # the check can fail: a page with a console error, an exception and a missing file trips it
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><p>x</p><img src="missing.png">'
                   '<script>console.error("on purpose"); throw new Error("also on purpose")</script>')
    browser.open(bad)
    problems = browser.problems()
    assert any("on purpose" in p for p in problems)
    assert any("also on purpose" in p for p in problems)
    assert any("missing.png" in p for p in problems)

    for page in (runs["a"] / "report.html", pair_html[0]):
        browser.events.clear()
        browser.open(page)
        found = json.loads(browser.evaluate(CHECK_PAGE))
        assert browser.problems() == []
        assert found["prompts"] == 4 and found["broken"] == 0
        runs_shown = 1 if page.parent == runs["a"] else 2
        assert found["grids"] == [16] * (4 * runs_shown)
        assert found["charts"] == 4 * 2  # a chart per prompt and attribute
        assert found["bars"] == 4 * (4 + 3) * runs_shown  # a bar per group (and run)
        assert found["chartWidth"] > 300 and found["gridWidth"] >= 60  # laid out, not collapsed
        if runs_shown == 2:
            assert "improved" in found["verdicts"]
        dom = browser.dom()
        assert dom.count("<svg") >= 8 and dom.count("<img") == 16 * 4 * runs_shown
        width, height, spread = _non_blank(browser.screenshot())
        assert (width, height) == (1280, 2000) and spread > 20  # not a blank page
