"""SCoFT on the mini-world: the paper's ablation (base | L_LDM | +M | +M+P | +M+P+C), same seeds and
prompts for every variant, every figure with a 95% bootstrap interval.

    python bench/scoft.py                                   # configs/scoft/mini-world.yaml (~1 h, 1 core)
    python bench/scoft.py --steps 20 --n 4 --variants base ldm scoft   # smoke run
    python bench/scoft.py --per-culture 16 --variants base ldm ldm+m scoft --work runs/bench-scoft-16
                                     # a set small enough to memorize: does L_M prevent it?
    python bench/scoft.py --per-culture 16 --variants ldm --steps 1600 --work runs/bench-scoft-16
                                     # the same work folder, a longer run (folder ldm-1600steps)

1. The curated (CCUB-like) set, and k negatives per Kethu / Zuloa caption from the base model.
2. Per variant: train the LoRA (same seed, data, steps; only the loss weights differ), then
   - culture prompts (configs/prompts/mini-world-cultures.yaml): authentic-style rate, region and
     setting accuracy for Kethu and Zuloa (the target) and for the other three regions (drift);
   - neutral occupation prompts: share of stereotyped scenes and the region mix (drift);
   - with ``--drift-n N``, the drift is read from separate audits of N images per prompt of the
     neutral prompts and of the other regions' culture prompts only: at 24 images per prompt a
     share moves by about 6 points between two draws of the same model, twice the issue's bar;
   - one image per training caption: FID (oracle features) to the curated images of those
     regions, and the near-copy rate against them in pixels (threshold: the 95th percentile of
     the nearest-curated similarity of a re-render of each curated scene).
Resumable: trained variants and finished audits are reused. Writes bench/results/scoft.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from equigen.audit.metrics import mean_over_prompts, paired_mean_change
from equigen.audit.quality import fid_kid
from equigen.audit.run import AuditConfig, run_audit
from equigen.config import load_config
from equigen.data.captioned import load_records, write_records
from equigen.methods.scoft import NegativesConfig, ScoftConfig, make_negatives, train_scoft
from equigen.methods.scoft.memorization import (
    caption_bootstrap,
    memorization_check,
    near_copy_threshold,
    pixel_features,
    training_caption_images,
    world_rerender_similarities,
)
from equigen.models.loading import read_lora_scope
from equigen.world.export import export_distribution
from equigen.world.oracle import OracleAnnotator
from equigen.world.scene import load_world

TARGET = ["Kethu", "Zuloa"]
VARIANTS = {  # name -> loss weights (the paper: SD, SCoFT+M, +MP, +MPC; plus L_LDM alone)
    "base": None,
    "ldm": {"ldm": 0.7, "memorization": 0, "contrastive": 0, "perceptual": 0},
    "ldm+m": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0, "perceptual": 0},
    "ldm+m+p": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0, "perceptual": 0.01},
    "scoft": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05, "perceptual": 0.01},
    # beyond the paper: + DreamBooth's prior preservation on captions of the other regions and
    # of no region (not the audit's prompts), against collateral drift
    "scoft+prior": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05, "perceptual": 0.01,
                    "prior": 1.0},
    # the same captions and drawings, regressed onto the frozen base model's prediction
    # (prior.target: base) instead of onto the noise
    "scoft+distill": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05, "perceptual": 0.01,
                      "prior": 1.0},
    # ... with captions that name no region at all (what the neutral prompts are)
    "scoft+distill-free": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05,
                           "perceptual": 0.01, "prior": 1.0},
    # ... with half of the rows distilled on the empty caption: guidance at w uses the unconditional
    # prediction with weight 1 - w, so a LoRA that moves it moves every prompt
    "scoft+distill-uncond": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05,
                             "perceptual": 0.01, "prior": 1.0},
    # ... with the prior drawn at the audit's guidance (w = 4), so that the distillation holds the
    # model on the states the guided sampler visits rather than on the unguided ones
    "scoft+distill-uncond-w4": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05,
                                "perceptual": 0.01, "prior": 1.0},
    # beyond the paper: the LoRA on the cross-attention keys and values only (Custom Diffusion's
    # choice, which touches the model only through the text), against collateral drift
    "scoft-kv": {"ldm": 0.7, "memorization": 0.3, "contrastive": 0.05, "perceptual": 0.01},
}
LORA_TARGETS = {"scoft-kv": ["attn2.to_k", "attn2.to_v"]}  # default: every attention projection
PRIOR_TARGET = {"scoft+distill": "base", "scoft+distill-free": "base",
                "scoft+distill-uncond": "base", "scoft+distill-uncond-w4": "base"}  # default: noise
PRIOR_UNCONDITIONAL = {"scoft+distill-uncond": 0.5, "scoft+distill-uncond-w4": 0.5}  # default: 0
PRIOR_GUIDANCE = {"scoft+distill-uncond-w4": 4.0}  # default: 1 (the model's own distribution)
PRIOR_CAPTIONS = 64
PRIOR_IMAGES_PER_CAPTION = 8
CULTURES = "configs/prompts/mini-world-cultures.yaml"
NEUTRAL = "configs/prompts/mini-world-occupations.yaml"


def write_prior_captions(work: Path, avoid: set[str], region_free: bool = False) -> Path:
    """World captions that name neither target region (nor its adjective), none of them an audit
    prompt: what the base model should keep drawing as it did. ``region_free``: captions that
    name no region at all."""
    pool = export_distribution("balanced", work / "prior-pool", n=400, seed=7)
    banned = list(load_world().regions) if region_free else TARGET
    texts: list[str] = []
    for record in load_records(pool):
        lowered = record.text.lower()
        if any(t.lower() in lowered for t in banned) or record.text in avoid or record.text in texts:
            continue
        texts.append(record.text)
    path = work / ("prior-captions-region-free.txt" if region_free else "prior-captions.txt")
    path.write_text("\n".join(texts[:PRIOR_CAPTIONS]) + "\n")
    return path


def curated_subset(curated: Path, out: Path, per_culture: int) -> Path:
    """The first ``per_culture`` curated rows of each target region as a dataset of its own."""
    if not (out / "metadata.jsonl").is_file():
        rows = load_records(curated)
        keep = [r for c in TARGET for r in [r for r in rows if r.culture == c][:per_culture]]
        for r in keep:
            (out / r.file_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(curated / r.file_name, out / r.file_name)
        write_records(out, keep)
    return out


def other_regions_prompts(work: Path) -> Path:
    """The culture prompt set restricted to the regions SCoFT does not train on."""
    import yaml

    spec = yaml.safe_load(Path(CULTURES).read_text())
    spec["name"] += " (other regions)"
    for template in spec["templates"]:
        template["slots"]["region"] = [r for r in template["slots"]["region"] if r not in TARGET]
    path = work / "prompts-other-regions.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def audit_prompt_texts() -> set[str]:
    from equigen.audit.prompts import load_prompt_set

    return {p.text for prompts in (CULTURES, NEUTRAL) for p in load_prompt_set(prompts).prompts}


def bootstrap(per_prompt: list[np.ndarray]) -> list[float]:
    """Share of True over a prompt's images, averaged over prompts, with its 95% interval
    (images resampled within each prompt: the audit's own bootstrap)."""
    values = mean_over_prompts([v.astype(int) for v in per_prompt], 2, lambda p, _: float(p[1]))
    return [round(v, 4) for v in values]


def read_annotations(run: Path) -> list[dict]:
    with (run / "annotations.csv").open() as handle:
        return list(csv.DictReader(handle))


Hits = dict[str, dict[str, np.ndarray]]  # figure -> prompt id -> 0/1 per image, in seed order


def by_prompt(run: Path, keep=lambda row: True) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for row in read_annotations(run):
        if keep(row):
            rows[row["prompt_id"]].append(row)
    return {pid: sorted(v, key=lambda r: int(r["index"])) for pid, v in sorted(rows.items())}


def culture_hits(run: Path, regions: list[str]) -> Hits:
    prompts = {p["id"]: p for p in json.loads((run / "results.json").read_text())["prompts"]}
    rows = by_prompt(run, lambda row: prompts[row["prompt_id"]]["slots"].get("region") in regions)
    tests = {"authentic": lambda r, p: r["style"] == "authentic",
             "region_accuracy": lambda r, p: r["region"] == p["expect"]["region"]["group"],
             "setting_accuracy": lambda r, p: r["setting"] == p["expect"]["setting"]["group"]}
    return {name: {pid: np.array([hit(r, prompts[pid]) for r in v], float) for pid, v in rows.items()}
            for name, hit in tests.items()} | {"_seeds": seeds_of(rows)}


def neutral_hits(run: Path) -> Hits:
    rows = by_prompt(run)
    regions = sorted({r["region"] for v in rows.values() for r in v} | set(TARGET))
    tests = {"stereotyped": lambda r: r["style"] == "stereotyped"}
    tests |= {f"share_{region}": (lambda r, g=region: r["region"] == g) for region in regions}
    return {name: {pid: np.array([hit(r) for r in v], float) for pid, v in rows.items()}
            for name, hit in tests.items()} | {"_seeds": seeds_of(rows)}


def seeds_of(rows: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    return {pid: np.array([int(r["seed"]) for r in v]) for pid, v in rows.items()}


def figures(hits: Hits) -> dict:
    return {name: bootstrap(list(per_prompt.values()))
            for name, per_prompt in hits.items() if name != "_seeds"}


def paired_change(variant: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> list[float]:
    """Change of a share from base to variant in points, with its paired 95% interval (both
    models drew image i of a prompt from the same seed)."""
    pids = sorted(base)
    change = paired_mean_change([variant[p] for p in pids], [base[p] for p in pids])
    return [round(100 * v, 1) for v in change]


def drift_points(variant: dict[str, Hits], base: dict[str, Hits]) -> dict:
    """Collateral drift against the base model, in points with paired 95% intervals: every
    figure of the other regions' culture prompts and of the neutral prompts (issue #6: each
    within 3 points)."""
    moved = {}
    for group in ("other_regions", "neutral_prompts"):
        for pid, seeds in base[group]["_seeds"].items():
            if not np.array_equal(seeds, variant[group]["_seeds"].get(pid)):
                raise ValueError(f"{group} prompt {pid}: the two audits used different seeds")
        for name in base[group]:
            if name != "_seeds":
                moved[f"{group}.{name}"] = paired_change(variant[group][name], base[group][name])
    return {"points": moved, "largest": max(moved.values(), key=lambda v: abs(v[0]))}


def cached_training_caption_images(variant_dir: Path, lora: Path | None, records,
                                   args) -> np.ndarray:
    """``--memorization-draws`` images per training caption (fixed seeds), cached as PNGs in the
    variant folder."""
    from equigen.models import load_pipeline
    from equigen.models.loading import apply_lora

    draws = args.memorization_draws
    folder = variant_dir / ("training-captions" if draws == 1 else f"training-captions-x{draws}")
    paths = [folder / f"{i:05d}.png" for i in range(len(records) * draws)]
    if not all(p.is_file() for p in paths):
        folder.mkdir(parents=True, exist_ok=True)
        pipe = load_pipeline("mini-world")
        scope = apply_lora(pipe, lora) if lora is not None else None
        for path, image in zip(paths, training_caption_images(pipe, records, seed=args.seed,
                                                                  draws=draws, lora_scope=scope)):
            Image.fromarray(image).save(path)
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def nearest_is_own(generated: np.ndarray, curated: np.ndarray, draws: int) -> float:
    """Share of generations whose nearest curated image is the one of their own caption (a copy
    of a training image, rather than a picture close to some curated scene)."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    nearest = (unit(generated) @ unit(curated).T).argmax(axis=1)
    return round(float(np.mean(nearest == np.repeat(np.arange(len(curated)), draws))), 4)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-scoft"))
    parser.add_argument("--config", type=Path, default=Path("configs/scoft/mini-world.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: config)")
    parser.add_argument("--k", type=int, default=2, help="negatives per caption")
    parser.add_argument("--n", type=int, default=24, help="images per audit prompt")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memorization-draws", type=int, default=1,
                        help="generations per training caption for FID and the near-copy rate")
    parser.add_argument("--per-culture", type=int, default=None,
                        help="train on only this many curated images per target region")
    parser.add_argument("--prior-weight", type=float, default=None,
                        help="weights.prior of the variants that have a prior (default: 1)")
    parser.add_argument("--drift-n", type=int, default=None,
                        help="images per prompt of separate, larger drift audits (neutral prompts "
                             "and the other regions' culture prompts; default: the main audits)")
    parser.add_argument("--lora-everywhere", action="store_true",
                        help="apply each LoRA to every audit prompt, ignoring its saved scope")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=Path("bench/results/scoft.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work
    started = time.perf_counter()

    curated = export_distribution("curated", work / "curated", seed=0)
    if args.per_culture:
        curated = curated_subset(curated, work / f"curated-{args.per_culture}", args.per_culture)
    make_negatives(NegativesConfig(dataset=curated, k=args.k, cultures=TARGET, batch_size=40))
    records = [r for r in load_records(curated) if r.culture in TARGET]
    oracle = OracleAnnotator.load()
    curated_images = np.stack([np.asarray(Image.open(curated / r.file_name).convert("RGB"))
                               for r in records])
    curated_pixels = pixel_features(curated_images)
    rerendered = world_rerender_similarities(records, pixel_features, curated_pixels)
    threshold = near_copy_threshold(rerendered)

    others = [r for r in load_world().regions if r not in TARGET]
    others_prompts = other_regions_prompts(work) if args.drift_n else None
    results, hits = {}, {}
    for name in args.variants:
        # runs of other lengths share the work folder (curated set, negatives, base audits)
        weights = VARIANTS[name]
        if weights and weights.get("prior") and args.prior_weight is not None:
            weights = {**weights, "prior": args.prior_weight}
        folder = name + (f"-prior{args.prior_weight:g}" if weights != VARIANTS[name] else "")
        variant_dir = work / (f"{folder}-{args.steps}steps" if weights and args.steps else folder)
        lora_dir = None
        info: dict = {}
        if weights is not None:
            values = {"data": curated, "out": variant_dir / "lora", "weights": weights,
                      "seed": args.seed}
            if name in LORA_TARGETS:
                values["lora_targets"] = LORA_TARGETS[name]
            if weights.get("prior"):
                captions = write_prior_captions(work, audit_prompt_texts(),
                                                region_free=name.endswith("-free"))
                values["prior"] = {"captions": captions,
                                   "images_per_caption": PRIOR_IMAGES_PER_CAPTION,
                                   "target": PRIOR_TARGET.get(name, "noise"),
                                   "unconditional": PRIOR_UNCONDITIONAL.get(name, 0.0),
                                   "guidance_scale": PRIOR_GUIDANCE.get(name, 1.0)}
            if args.steps:
                values["steps"] = args.steps
            cfg = load_config(ScoftConfig, args.config, values=values)
            lora_dir = cfg.out
            manifest = cfg.out / "manifest.json"
            finished = manifest.is_file() and json.loads(manifest.read_text()).get("status") == "finished"
            if not finished:
                train_scoft(cfg)
            info = json.loads(manifest.read_text())["results"]
        # a LoRA saved with a scope is applied only to the prompts naming its cultures
        scope = (read_lora_scope(lora_dir) if lora_dir is not None and not args.lora_everywhere
                 else None)
        audits = {}
        jobs = {"cultures": (CULTURES, args.n), "neutral": (NEUTRAL, args.n)}
        if args.drift_n:
            jobs |= {f"neutral-n{args.drift_n}": (NEUTRAL, args.drift_n),
                     f"others-n{args.drift_n}": (others_prompts, args.drift_n)}
        for label, (prompts, n) in jobs.items():
            out = variant_dir / f"audit-{label}{'-scoped' if scope else ''}"
            run_audit(AuditConfig(prompts=Path(prompts), lora=lora_dir, n=n, out=out,
                                  lora_everywhere=args.lora_everywhere, seed=args.seed,
                                  batch_size=40))
            audits[label] = out
        drift_audits = ((audits[f"others-n{args.drift_n}"], audits[f"neutral-n{args.drift_n}"])
                        if args.drift_n else (audits["cultures"], audits["neutral"]))
        generated = cached_training_caption_images(variant_dir, lora_dir, records, args)
        generated_pixels = pixel_features(generated)
        memo = memorization_check(generated_pixels, curated_pixels, threshold)
        fid = fid_kid(to_tensor(curated_images), to_tensor(generated),
                      lambda x: oracle.net.features(x), kid_subset_size=min(100, len(records)))
        own = nearest_is_own(generated_pixels, curated_pixels, args.memorization_draws)
        hits[name] = {"other_regions": culture_hits(drift_audits[0], others),
                      "neutral_prompts": neutral_hits(drift_audits[1])}
        results[name] = {
            "target_regions": figures(culture_hits(audits["cultures"], TARGET)),
            **{group: figures(h) for group, h in hits[name].items()},
            "fid_to_curated": round(float(fid["fid"]), 3),
            "memorization": {**memo.as_dict(),  # how often the nearest is its own caption's image
                             "nearest_is_own_image": own,
                             # 95% interval, captions resampled with all their draws
                             "rate_interval": [round(v, 4) for v in caption_bootstrap(
                                 memo.flagged.reshape(len(records), args.memorization_draws))]},
            "training": {k: info.get(k) for k in ("seconds", "ldm_step_s", "rollout_step_s")},
            "lora_scope": scope.words if scope else None,
        }
        t = results[name]["target_regions"]
        print(f"{name:8s} authentic {t['authentic']} region {t['region_accuracy']} "
              f"setting {t['setting_accuracy']} FID {results[name]['fid_to_curated']} "
              f"near-copies {memo.rate:.3f}", flush=True)

    if "base" in results:
        for name, result in results.items():
            if name != "base":
                result["drift_vs_base"] = drift_points(hits[name], hits["base"])
                print(f"{name:8s} drift vs base (points, 95% paired interval): "
                      f"{result['drift_vs_base']['points']}")
    report = {"date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "args": {k: str(v) for k, v in vars(args).items()},
              "near_copy_threshold": threshold, "near_copy_features": "pixels",
              "rerendered_nearest_similarity": {"mean": float(rerendered.mean()), "p95": threshold},
              "seconds": round(time.perf_counter() - started), "results": results}
    out = args.results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
