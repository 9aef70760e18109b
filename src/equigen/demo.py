"""The demo behind ``make demo``: the whole story on the mini-world, measured, in one report.

Stages (each resumable; a second run reuses finished stages unless ``fresh``):

1. ``grid``        a few generations of the base model (``grid.png``);
2. ``audit-base``  tone on neutral prompts for held-out occupations (the base model's bias);
3. ``fairmap``     train a Fair Mapping (configs/fairmap/mini-world.yaml), then audit it;
4. ``scoft``       curated Kethu / Zuloa set + base-model negatives, SCoFT LoRA
                   (configs/scoft/mini-world.yaml, fewer steps), culture audits before / after and
                   the near-copy rate of generations from the training captions;
5. ``stablerep``   synthetic images from web captions, a short StableRep run, a SimCLR run on the
                   same number of real web images, linear probes on the ``probe`` split;
6. ``report``      ``report.html`` (headline table + the before/after comparison) and the same
                   headline table in the terminal, with the time of every stage.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from rich.table import Table

from equigen.audit.metrics import wilson_interval
from equigen.config import StrictModel, load_config
from equigen.manifest import run_manifest
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
from equigen.utils.console import info, output
from equigen.utils.io import write_json_atomic

TARGET_REGIONS = ["Kethu", "Zuloa"]
STAGES_FILE = "stages.json"


class DemoConfig(StrictModel):
    out: Path = Path("runs/demo")
    model: str = "mini-world"
    seed: int = 0
    fresh: bool = False  # redo every stage
    grid_prompts: list[str] = [
        "a photo of a doctor",
        "a photo of a farmer",
        "a photo of a dark-skinned doctor from Avel at the market",
        "a street in Kethu",
        "a photo of a person from Zuloa",
        "a photo of a chef from Borenza at home",
    ]
    images_per_grid_prompt: int = 8
    n: int = 30  # images per audit prompt
    heldout_prompts: Path = Path("configs/prompts/mini-world-heldout-occupations.yaml")
    fairmap_config: Path = Path("configs/fairmap/mini-world.yaml")
    fairmap_steps: Optional[int] = None  # default: the config's
    scoft_config: Path = Path("configs/scoft/mini-world.yaml")
    scoft_steps: int = 300
    curated_rows: int = 300  # curated export (60 per region; Kethu + Zuloa = 120 train rows)
    negatives_k: int = 2
    synth_captions: int = 100
    synth_m: int = 4
    stablerep_steps: int = 150
    probe_rows: int = 1500
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE


# ---------------------------------------------------------------------------------- stages

def stage_grid(cfg: DemoConfig) -> dict:
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images, image_seed
    from equigen.utils.images import image_grid

    pipe = load_pipeline(cfg.model)
    n = cfg.images_per_grid_prompt
    prompts = [p for p in cfg.grid_prompts for _ in range(n)]
    seeds = [image_seed(cfg.seed, i // n, i % n) for i in range(len(prompts))]
    images = generate_images(pipe, prompts, seeds, guidance_scale=cfg.guidance_scale,
                             steps=cfg.steps, batch_size=24, description="grid")
    grid = image_grid([images[i : i + n] for i in range(0, len(images), n)], cfg.grid_prompts)
    grid.save(cfg.out / "grid.png")
    return {"grid": str(cfg.out / "grid.png")}


def _audit(cfg: DemoConfig, prompts: Path, out: Path, **extra) -> dict:
    from equigen.audit.run import AuditConfig, run_audit

    return run_audit(AuditConfig(model=cfg.model, prompts=prompts, n=cfg.n, out=out, seed=cfg.seed,
                                 steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                                 batch_size=40, **extra))


def stage_audit_base(cfg: DemoConfig) -> dict:
    _audit(cfg, cfg.heldout_prompts, cfg.out / "audit-base")
    return {}


def stage_fairmap(cfg: DemoConfig) -> dict:
    from equigen.methods.fairmap import FairMapConfig, train_fairmap

    values: dict[str, Any] = {"out": cfg.out / "fairmap", "model": cfg.model}
    if cfg.fairmap_steps:
        values["steps"] = cfg.fairmap_steps
    fm = load_config(FairMapConfig, cfg.fairmap_config, values=values)
    if not (fm.out / "fairmap.safetensors").is_file():
        train_fairmap(fm)
    _audit(cfg, cfg.heldout_prompts, cfg.out / "audit-fairmap", fairmap=fm.out)
    return {}


def culture_prompts(cfg: DemoConfig) -> Path:
    """The culture prompt set restricted to the regions SCoFT trains on."""
    from equigen.config import read_yaml

    data = read_yaml(Path("configs/prompts/mini-world-cultures.yaml"))
    for template in data["templates"]:
        template["slots"]["region"] = list(TARGET_REGIONS)
    data["name"] = "mini-world cultures (Kethu, Zuloa)"
    path = cfg.out / "prompts-cultures.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stage_scoft(cfg: DemoConfig) -> dict:
    from equigen.methods.scoft import NegativesConfig, ScoftConfig, make_negatives, train_scoft
    from equigen.world.export import export_distribution

    curated = export_distribution("curated", cfg.out / "curated", n=cfg.curated_rows, seed=cfg.seed)
    make_negatives(NegativesConfig(dataset=curated, model=cfg.model, k=cfg.negatives_k,
                                   cultures=TARGET_REGIONS, batch_size=40,
                                   guidance_scale=cfg.guidance_scale, steps=cfg.steps))
    scoft = load_config(ScoftConfig, cfg.scoft_config,
                        values={"data": curated, "out": cfg.out / "scoft", "steps": cfg.scoft_steps,
                                "cultures": TARGET_REGIONS, "model": cfg.model})
    manifest = scoft.out / "manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "finished"):
        train_scoft(scoft)
    prompts = culture_prompts(cfg)
    _audit(cfg, prompts, cfg.out / "audit-cultures-base")
    _audit(cfg, prompts, cfg.out / "audit-cultures-scoft", lora=scoft.out)
    return {"memorization": {name: near_copies(cfg, curated, lora)
                             for name, lora in (("base", None), ("scoft", scoft.out))}}


def near_copies(cfg: DemoConfig, curated: Path, lora: Path | None) -> dict:
    """Near-copy rate of one generation per training caption against the curated images. The
    base model's drawing of each training caption is already there: its first negative."""
    from PIL import Image

    from equigen.data.captioned import load_records
    from equigen.methods.scoft.memorization import (
        near_copies as near_copy_rate,
        pixel_features,
        training_caption_images,
    )
    from equigen.models import load_pipeline
    from equigen.models.loading import apply_lora

    records = [r for r in load_records(curated) if r.culture in TARGET_REGIONS]

    def read(relative: str) -> np.ndarray:
        return np.asarray(Image.open(curated / relative).convert("RGB"))

    if lora is None:
        generated = np.stack([read(r.negatives[0]) for r in records])
    else:
        pipe = load_pipeline(cfg.model)
        generated = training_caption_images(pipe, records, seed=cfg.seed,
                                            guidance_scale=cfg.guidance_scale, steps=cfg.steps,
                                            lora_scope=apply_lora(pipe, lora))
    curated_images = np.stack([read(r.file_name) for r in records])
    return near_copy_rate(generated, curated_images, records, pixel_features)


def stage_stablerep(cfg: DemoConfig) -> dict:
    from equigen.data.captioned import load_records
    from equigen.data.synth import SynthConfig, run_synth
    from equigen.methods.stablerep.probe import ProbeConfig, run_probe
    from equigen.methods.stablerep.train import train_stablerep
    from equigen.world.export import export_distribution

    real_n = cfg.synth_captions * cfg.synth_m
    web = export_distribution("web", cfg.out / "web", n=real_n, seed=cfg.seed)
    probe = export_distribution("probe", cfg.out / "probe", n=cfg.probe_rows, seed=cfg.seed)
    captions = list(dict.fromkeys(r.text for r in load_records(web)))[: cfg.synth_captions]
    (cfg.out / "captions.txt").write_text("\n".join(captions) + "\n")
    synth = SynthConfig(captions=cfg.out / "captions.txt", model=cfg.model, m=cfg.synth_m,
                        guidance_scale=2.0, steps=15, out=cfg.out / "synth", batch_size=40,
                        captions_per_shard=50)
    run_synth(synth, rank=0, world_size=1)
    probes = {}
    # 64 images a step for both: 16 captions x 4 images, or 32 real images x 2 views
    batches = (("stablerep", synth.out, min(4, cfg.synth_m), min(16, len(captions))),
               ("simclr", web, 1, min(32, real_n)))
    for method, data, m, n in batches:
        run = cfg.out / method
        train = demo_training_config(method, data, run, images_per_caption=m,
                                     captions_per_batch=n, steps=cfg.stablerep_steps,
                                     seed=cfg.seed)
        if not (run / "probe.json").is_file():
            train_stablerep(train)
            run_probe(ProbeConfig(run=run, data=probe))
        result = json.loads((run / "probe.json").read_text())
        labels = ["region", "occupation", "setting"]
        n_test = sum(result[label]["n_test"] for label in labels)
        correct = round(sum(result[label]["test_accuracy"] * result[label]["n_test"] for label in labels))
        probes[method] = {"mean": result["mean_test_accuracy"],
                          "interval": [result["mean_test_accuracy"],
                                       *wilson_interval(correct, n_test)[1:]],
                          **{label: result[label]["test_accuracy"] for label in labels}}
    return {"probes": probes}


def demo_training_config(method: str, data: Path, out: Path, images_per_caption: int,
                         captions_per_batch: int, steps: int, seed: int):
    """The demo's short StableRep / SimCLR run: the mini-world config with a patch-16, depth-6 ViT."""
    from equigen.methods.stablerep.train import StableRepConfig

    src = load_config(StableRepConfig, Path("configs/stablerep/mini-world.yaml"),
                      values={"data": data, "out": out})
    train = src.model_copy(update={
        "method": method, "steps": steps, "warmup_steps": 10, "checkpoint_every": 50,
        "images_per_caption": images_per_caption, "captions_per_batch": captions_per_batch,
        "seed": seed,
        "arch": src.arch.model_copy(update={"patch_size": 16, "backbone_args": {"depth": 6}})})
    return StableRepConfig.model_validate(train.model_dump())


def stage_report(cfg: DemoConfig, stages: dict) -> dict:
    from equigen.audit.report import write_report

    headline = headline_rows(cfg, stages)
    write_report([cfg.out / "audit-cultures-base", cfg.out / "audit-cultures-scoft"],
                 cfg.out / "report-scoft.html", title="SCoFT on the mini-world: Kethu and Zuloa")
    write_report([cfg.out / "audit-base", cfg.out / "audit-fairmap"], cfg.out / "report.html",
                 title="equigen demo: the mini-world, repaired and measured",
                 extra_html=headline_html(headline, stages))
    return {"headline": headline}


# ------------------------------------------------------------------------------- headline

def _fd(run: Path) -> list[float]:
    return json.loads((run / "results.json").read_text())["summary"]["fairness"]["tone"]["fd"]


def _authentic(run: Path) -> list[float]:
    from equigen.audit.metrics import mean_over_prompts
    from equigen.audit.report import load_run

    loaded = load_run(run)
    groups = loaded.groups["style"]
    per_prompt = [labels["style"] for labels in loaded.labels.values()]
    index = groups.index("authentic")
    return list(mean_over_prompts(per_prompt, len(groups), lambda p, _: float(p[index])))


def headline_rows(cfg: DemoConfig, stages: dict) -> list[dict[str, Any]]:
    memo = stages["scoft"]["result"]["memorization"]
    probes = stages["stablerep"]["result"]["probes"]
    return [
        {"what": "tone FD, held-out occupations (lower is fairer)",
         "before": ("base", _fd(cfg.out / "audit-base")),
         "after": ("Fair Mapping", _fd(cfg.out / "audit-fairmap"))},
        {"what": "authentic style, Kethu / Zuloa prompts",
         "before": ("base", _authentic(cfg.out / "audit-cultures-base")),
         "after": ("SCoFT", _authentic(cfg.out / "audit-cultures-scoft"))},
        {"what": "near-copies of curated images (training captions)",
         "before": ("base", memo["base"]["interval"]), "after": ("SCoFT", memo["scoft"]["interval"])},
        {"what": "linear probe top-1 (region, occupation, setting)",
         "before": ("SimCLR, real", probes["simclr"]["interval"]),
         "after": ("StableRep, synthetic", probes["stablerep"]["interval"])},
    ]


def _fmt(iv: list[float]) -> str:
    return f"{iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}]"


def headline_html(rows: list[dict], stages: dict) -> str:
    from html import escape

    body = "".join(
        f"<tr><td>{escape(r['what'])}</td><td>{escape(r['before'][0])}: {_fmt(r['before'][1])}</td>"
        f"<td>{escape(r['after'][0])}: {_fmt(r['after'][1])}</td></tr>" for r in rows)
    times = ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in stages.items() if "seconds" in s)
    return ("<section><h2>Headline</h2><p>Every figure with its 95% interval (bootstrap over "
            "images, or Wilson for rates). SCoFT's before/after images: "
            "<a href=\"report-scoft.html\">report-scoft.html</a>.</p>"
            f"<table><tr><th>measure</th><th>before</th><th>after</th></tr>{body}</table>"
            f"<p>Stage times: {escape(times)}.</p></section>")


def print_headline(rows: list[dict], stages: dict) -> None:
    table = Table(title="equigen demo: headline (95% intervals)")
    for column in ("measure", "before", "after"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["what"], f"{r['before'][0]}: {_fmt(r['before'][1])}",
                      f"{r['after'][0]}: {_fmt(r['after'][1])}")
    output.print(table)
    timing = Table(title="stage times")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    timing.add_column("")
    for name, s in stages.items():
        timing.add_row(name, f"{s.get('seconds', 0):.0f}", "reused" if s.get("reused") else "")
    output.print(timing)


# ------------------------------------------------------------------------------------ run

STAGES: dict[str, Callable[[DemoConfig], dict]] = {
    "grid": stage_grid,
    "audit-base": stage_audit_base,
    "fairmap": stage_fairmap,
    "scoft": stage_scoft,
    "stablerep": stage_stablerep,
}


def run_demo(cfg: DemoConfig) -> Path:
    """Run (or resume) the demo; return the output folder."""
    out = cfg.out
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STAGES_FILE
    done = json.loads(path.read_text()) if path.is_file() else {}
    stages: dict[str, dict] = {}
    with run_manifest(out, "demo", cfg, seed=cfg.seed) as manifest:
        for name, fn in STAGES.items():
            if name in done:
                stages[name] = {**done[name], "reused": True}
                info(f"stage {name}: finished before ({done[name]['seconds']:.0f} s), reused")
                continue
            info(f"stage {name} ...")
            tic = time.perf_counter()
            result = fn(cfg)
            stages[name] = {"seconds": round(time.perf_counter() - tic, 1), "result": result}
            done[name] = stages[name]
            write_json_atomic(path, done)
            info(f"stage {name}: {stages[name]['seconds']:.0f} s")
        tic = time.perf_counter()
        report = stage_report(cfg, stages)
        stages["report"] = {"seconds": round(time.perf_counter() - tic, 1)}
        manifest["results"] = {"headline": report["headline"],
                               "stage_seconds": {k: v.get("seconds") for k, v in stages.items()}}
    print_headline(report["headline"], stages)
    info(f"report: {out / 'report.html'}")
    return out
