"""How good is the mini-world? Oracle accuracy, the base model's fidelity, its inherited bias.

    python bench/world_quality.py                   # the shipped model and oracle
    python bench/world_quality.py --model runs/world-base/pipeline --n-per-occupation 200

Prints every figure beside its baseline measured in the same run (declared `web` skew, uniform,
a second set of real renders for FID) and writes them to bench/results/world_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from equigen.audit.annotators import images_to_tensor
from equigen.audit.metrics import (
    bootstrap_interval,
    distribution,
    expected_tv_noise,
    guidance_tilt,
    total_variation,
)
from equigen.models import load_pipeline
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
from equigen.models.generate import generate_images, image_seed
from equigen.models.loading import SAMPLERS
from equigen.world.distributions import declared, sample_rows
from equigen.world.oracle import OracleAnnotator, labels_of
from equigen.world.prompts import (
    corpus_neutral_prompts,
    named_prompt,
    neutral_prompt,
    region_prompt,
)
from equigen.world.render import render
from equigen.world.scene import Scene, load_world

GUIDANCE_SCALES = (1.0, 2.0, 4.0, 7.5)


def render_rows(rows: list[dict]) -> list[Image.Image]:
    return [render(Scene(r["tone"], r["region"], r["occupation"], r["setting"], r["style"]),
                   r["seed"]) for r in rows]


def oracle_accuracy(oracle: OracleAnnotator, n: int) -> dict[str, float]:
    """Accuracy per attribute on fresh held-out renders (a seed the oracle never trained on)."""
    rows = [r for r in sample_rows("probe", n * 5, seed=2024) if r["split"] == "test"][:n]
    probs = oracle.predict_proba(render_rows(rows))
    truth = labels_of(rows, oracle.groups)
    return {a: float((probs[a].argmax(-1) == truth[a]).float().mean()) for a in oracle.groups}


@torch.no_grad()
def vae_ceiling(pipe, oracle: OracleAnnotator, n: int) -> dict[str, float]:
    """Oracle accuracy on VAE reconstructions of fresh web renders: the best any generation
    through this VAE can score (what the latents keep of each attribute)."""
    rows = sample_rows("web", n, seed=4040)
    x = images_to_tensor(render_rows(rows)) * 2 - 1
    recon = torch.cat([pipe.vae.decode(pipe.vae.encode(x[i : i + 100]).latent_dist.mean).sample
                       for i in range(0, n, 100)])
    probs = oracle.predict_proba(((recon.clamp(-1, 1) + 1) / 2))
    truth = labels_of(rows, oracle.groups)
    return {a: float((probs[a].argmax(-1) == truth[a]).float().mean()) for a in oracle.groups}


def named_fidelity(pipe, oracle, args) -> dict:
    """Held-out (occupation, region, setting) combinations, each with every tone named."""
    world = load_world()
    prompts, truth = [], []
    for c, (occupation, region, setting) in enumerate(world.heldout_combinations):
        for tone in range(len(world.tones)):
            for i in range(args.n_per_named):
                prompts.append(named_prompt(occupation, region, setting, tone))
                truth.append({"occupation": occupation, "region": region, "setting": setting,
                              "tone": tone})
    seeds = [image_seed(11, i // args.n_per_named, i % args.n_per_named) for i in range(len(prompts))]
    images = generate_images(pipe, prompts, seeds, guidance_scale=args.guidance,
                             steps=args.steps, batch_size=args.batch_size, description="named")
    probs = oracle.predict_proba(images)
    named = ("occupation", "region", "setting", "tone")
    labels = labels_of(truth, {a: oracle.groups[a] for a in named})
    out = {"n": len(images)}
    for attr in ("occupation", "region", "setting", "tone"):
        correct = (probs[attr].argmax(-1) == labels[attr]).numpy().astype(float)
        out[attr] = bootstrap_interval(correct, np.mean)
    return out, images


def template_prompts(occupation: str, n: int) -> list[str]:
    return [neutral_prompt(occupation)] * n


def corpus_prompts(occupation: str, n: int) -> list[str]:
    return corpus_neutral_prompts(occupation, n, seed=2026)


NEUTRAL_PROMPTS = {"template": template_prompts, "corpus": corpus_prompts}


def tone_bias(pipe, oracle, args, guidance: float, n: int, prompts_for=template_prompts,
              occupations: list[str] | None = None) -> dict:
    """Neutral prompts per occupation: tone distribution vs the declared web skew and uniform.

    ``prompts_for(occupation, n)``: the one template "a photo of a doctor" (``template_prompts``),
    or the corpus's own captions that name the occupation and not the tone (``corpus_prompts``).
    ``occupations``: a subset (default: all); each keeps its seeds.
    """
    world = load_world()
    web = declared("web")
    k = len(world.tones)
    marginal = web.tone  # what the unconditional branch learned (caption dropout)
    result = {}
    all_images = []
    for o, occupation in enumerate(world.occupations):
        if occupations is not None and occupation not in occupations:
            continue
        seeds = [image_seed(23, o, i) for i in range(n)]
        images = generate_images(pipe, prompts_for(occupation, n), seeds,
                                 guidance_scale=guidance, steps=args.steps,
                                 batch_size=args.batch_size, description=f"{occupation} w={guidance}")
        all_images += images
        tones = oracle.predict_proba(images)["tone"].argmax(-1).numpy()
        target = web.tone_given_occupation[web.occupations.index(occupation)]
        result[occupation] = {
            "generated": distribution(tones, k).round(4).tolist(),
            "web": np.round(target, 4).tolist(),
            "tv_to_web": bootstrap_interval(tones, lambda t: total_variation(distribution(t, k), target)),
            "tv_to_uniform": bootstrap_interval(tones, lambda t: total_variation(distribution(t, k), np.full(k, 1 / k))),
            "web_tv_to_uniform": total_variation(target, np.full(k, 1 / k)),
            "tv_noise_floor": expected_tv_noise(target, n),
            # a perfect model under guidance w draws p(tone|c)^w p(tone)^(1-w): its TV to web
            "tv_of_perfect_model": total_variation(guidance_tilt(target, marginal, guidance), target),
            "n": n,
        }
    return result, all_images


def stereotype_rates(pipe, oracle, args) -> dict:
    world = load_world()
    web = declared("web")
    style_index = oracle.groups["style"].index("stereotyped")
    marginal = web.stereotyped  # the unconditional branch's share
    out = {}
    for r, region in enumerate(world.regions):
        n = args.n_per_region
        seeds = [image_seed(31, r, i) for i in range(n)]
        images = generate_images(pipe, [region_prompt(region)] * n, seeds,
                                 guidance_scale=args.guidance, steps=args.steps,
                                 batch_size=args.batch_size, description=f"region {region}")
        stereotyped = (oracle.predict_proba(images)["style"].argmax(-1) == style_index).numpy()
        share = float(web.stereotyped_given_region[web.regions.index(region)])
        perfect = guidance_tilt([share, 1 - share], [marginal, 1 - marginal], args.guidance)[0]
        out[region] = {"generated": bootstrap_interval(stereotyped.astype(float), np.mean),
                       "web": share, "perfect_model": round(float(perfect), 4)}
    return out


def fid(oracle, generated: list[Image.Image], n: int) -> dict:
    """FID/KID with the oracle's penultimate features: generated vs held-out web renders, and the
    floor: a second, independent set of web renders vs the same held-out set."""
    from equigen.audit.quality import fid_kid

    reference = images_to_tensor(render_rows(sample_rows("web", n, seed=777)))
    second = images_to_tensor(render_rows(sample_rows("web", n, seed=778)))
    return {"generated_vs_web": fid_kid(reference, images_to_tensor(generated[:n]), oracle.net.features),
            "floor_web_vs_web": fid_kid(reference, second, oracle.net.features), "n": n}


def speed(pipe, args) -> dict:
    out = {}
    for batch, count in ((16, 32), (1, 8)):
        seeds = list(range(count))
        generate_images(pipe, ["a photo of a doctor"] * batch, seeds[:batch], steps=args.steps,
                        batch_size=batch)  # warm-up
        start = time.perf_counter()
        generate_images(pipe, ["a photo of a doctor"] * count, seeds, steps=args.steps,
                        batch_size=batch)
        out[f"images_per_s_batch{batch}"] = count / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-world")
    parser.add_argument("--oracle", default=None, help="oracle folder (default: shipped)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE,
                        help="the default guidance scale")
    parser.add_argument("--n-per-occupation", type=int, default=200)
    parser.add_argument("--n-curve", type=int, default=100,
                        help="per occupation, for the guidance scales other than the default")
    parser.add_argument("--n-per-named", type=int, default=13, help="per combination and tone")
    parser.add_argument("--n-per-region", type=int, default=100)
    parser.add_argument("--n-oracle", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-guidance-curve", action="store_true")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                        help="replace the model's own sampler (the shipped mini-world: dpm++2m)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/world_quality.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    oracle = OracleAnnotator.load(args.oracle)
    pipe = load_pipeline(args.model, sampler=args.sampler)
    results: dict = {"model": args.model, "date": date.today().isoformat(),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                     "sampler": type(pipe.scheduler).__name__,
                     "steps": args.steps, "default_guidance": args.guidance}
    results["oracle_accuracy"] = oracle_accuracy(oracle, args.n_oracle)
    print("oracle accuracy on held-out renders:", {a: f"{v:.2%}" for a, v in results["oracle_accuracy"].items()})
    results["vae_ceiling"] = vae_ceiling(pipe, oracle, min(args.n_oracle, 1000))
    print("oracle accuracy on VAE reconstructions (the ceiling for generations):",
          {a: f"{v:.2%}" for a, v in results["vae_ceiling"].items()})
    results["named"], _ = named_fidelity(pipe, oracle, args)
    print("named attributes on held-out combinations (estimate, 95% CI):", results["named"])
    scales = (args.guidance,) if args.skip_guidance_curve else GUIDANCE_SCALES
    results["tone_bias"], results["tone_bias_corpus_prompts"] = {}, {}
    # The curve with the one template; both kinds of neutral prompt at the default scale.
    runs = [("template", w) for w in sorted({*scales, args.guidance})] + [("corpus", args.guidance)]
    for kind, w in runs:
        n = args.n_per_occupation if w == args.guidance else args.n_curve
        key = "tone_bias" if kind == "template" else "tone_bias_corpus_prompts"
        results[key][str(w)], images = tone_bias(pipe, oracle, args, w, n, NEUTRAL_PROMPTS[kind])
        if w == args.guidance and kind == "template":
            default_images = images
        for occupation, v in results[key][str(w)].items():
            print(f"  {kind} prompts w={w} {occupation:8s} generated {v['generated']} web {v['web']} "
                  f"TV to web {v['tv_to_web'][0]:.3f} [{v['tv_to_web'][1]:.3f}, {v['tv_to_web'][2]:.3f}]"
                  f" (noise floor {v['tv_noise_floor']:.3f}; a perfect model's TV under this "
                  f"guidance {v['tv_of_perfect_model']:.3f}; web's TV to uniform "
                  f"{v['web_tv_to_uniform']:.2f}, generated's {v['tv_to_uniform'][0]:.2f})")
    results["stereotyped"] = stereotype_rates(pipe, oracle, args)
    print("stereotyped share per region (generated vs web):",
          {r: (round(v["generated"][0], 3), v["web"]) for r, v in results["stereotyped"].items()},
          "; a perfect model of web under this guidance:",
          {r: v["perfect_model"] for r, v in results["stereotyped"].items()})
    results["fid"] = fid(oracle, default_images, min(1000, len(default_images)))
    print("FID (oracle features):", results["fid"])
    results["speed"] = speed(pipe, args)
    print("generation speed:", {k: round(v, 2) for k, v in results["speed"].items()})
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} ({results['bench_seconds']} s)")


if __name__ == "__main__":
    main()
