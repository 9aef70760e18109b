"""Is a skewed tone share the model's choice or a misreading? Named vs unnamed tone per occupation.

    python bench/tone_by_occupation.py --guidance 1.1 --n 32      # ~4 min on 2 cores

For each occupation: the tone shares the oracle reads for the neutral prompt ("a photo of a
teacher", the baseline, same run) and, for each tone, the share of "a photo of a light-skinned
teacher" read as each tone. If an occupation's named tones are read back as named while its
neutral prompt over-draws one tone, the excess is the model's mixture weight, not the oracle's or
the renderer's. Writes bench/results/tone_by_occupation.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import torch

from equigen.audit.metrics import distribution
from equigen.models import load_pipeline
from equigen.models.defaults import DEFAULT_STEPS
from equigen.models.generate import generate_images, image_seed
from equigen.world.captions import with_article
from equigen.world.distributions import declared
from equigen.world.oracle import OracleAnnotator
from equigen.world.prompts import neutral_prompt
from equigen.world.scene import load_world


def read_tones(pipe, oracle, prompt: str, seeds: list[int], args) -> list[float]:
    images = generate_images(pipe, [prompt] * len(seeds), seeds, guidance_scale=args.guidance,
                             steps=args.steps, batch_size=args.batch_size, description=prompt)
    probs = oracle.predict_proba(images)["tone"]
    return distribution(probs.argmax(-1).numpy(), probs.shape[-1]).round(4).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-world")
    parser.add_argument("--guidance", type=float, default=1.1)
    parser.add_argument("--n", type=int, default=32, help="images per prompt")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/tone_by_occupation.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    world, web = load_world(), declared("web")
    tone_names = [t.name for t in world.tones]
    oracle, pipe = OracleAnnotator.load(None), load_pipeline(args.model)
    results = {"model": args.model, "date": date.today().isoformat(), "guidance": args.guidance,
               "n": args.n, "tones": tone_names, "occupations": {}}
    for o, occupation in enumerate(world.occupations):
        seeds = [image_seed(57, o, i) for i in range(args.n)]
        row = {"web": np.round(web.tone_given_occupation[web.occupations.index(occupation)], 4).tolist(),
               "neutral": read_tones(pipe, oracle, neutral_prompt(occupation), seeds, args),
               "named": {}}
        for t, tone in enumerate(tone_names):
            prompt = f"a photo of {with_article(f'{tone}-skinned {occupation}')}"
            row["named"][tone] = read_tones(pipe, oracle, prompt, seeds, args)
        hits = [row["named"][tone][t] for t, tone in enumerate(tone_names)]
        row["named_read_as_named"] = round(float(np.mean(hits)), 4)
        results["occupations"][occupation] = row
        print(f"{occupation:8s} web {row['web']} neutral {row['neutral']}; named tone read as named "
              f"{row['named_read_as_named']:.1%} (" + ", ".join(
                  f"{tone} {h:.0%}" for tone, h in zip(tone_names, hits)) + ")", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
