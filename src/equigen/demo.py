"""The demo job behind ``make demo``: the mini-world's base model and the bias it inherited.

1. a grid of generations for a handful of prompts (``grid.png``);
2. for a neutral prompt per occupation ("a photo of a doctor"), the tone distribution of the
   generations as read by the oracle, next to the ``web`` distribution the model was trained on
   and the total-variation distance between the two (``tone_by_occupation.json``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.table import Table

from equigen.config import StrictModel
from equigen.manifest import run_manifest
from equigen.audit.metrics import distribution, expected_tv_noise, total_variation
from equigen.utils.console import info, output


class DemoConfig(StrictModel):
    out: Path = Path("runs/demo")
    model: str = "mini-world"
    seed: int = 0
    grid_prompts: list[str] = [
        "a photo of a doctor",
        "a photo of a farmer",
        "a photo of a dark-skinned doctor from Avel at the market",
        "a photo of a very light-skinned farmer on the street",
        "a photo of a person from Kethu",
        "a photo of a chef from Borenza at home",
    ]
    images_per_grid_prompt: int = 8
    n_per_occupation: int = 48  # neutral-prompt images per occupation for the tone table
    steps: int = 25
    guidance_scale: float = 4.0
    batch_size: int = 24


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo; return the output folder."""
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images, image_seed
    from equigen.utils.images import image_grid
    from equigen.utils.io import write_json_atomic
    from equigen.world.distributions import declared
    from equigen.world.oracle import OracleAnnotator
    from equigen.world.prompts import neutral_prompt
    from equigen.world.scene import load_world

    out = cfg.out
    world = load_world()
    gen = dict(guidance_scale=cfg.guidance_scale, steps=cfg.steps, batch_size=cfg.batch_size)
    with run_manifest(out, "demo", cfg, seed=cfg.seed) as manifest:
        start = time.perf_counter()
        pipe = load_pipeline(cfg.model)
        oracle = OracleAnnotator.load()
        n = cfg.images_per_grid_prompt
        prompts = [p for p in cfg.grid_prompts for _ in range(n)]
        seeds = [image_seed(cfg.seed, i // n, i % n) for i in range(len(prompts))]
        images = generate_images(pipe, prompts, seeds, description="grid", **gen)
        grid = image_grid([images[i : i + n] for i in range(0, len(images), n)], cfg.grid_prompts)
        grid.save(out / "grid.png")

        web = declared("web")
        k = len(world.tones)
        rows = {}
        for o, occupation in enumerate(world.occupations):
            m = cfg.n_per_occupation
            images = generate_images(pipe, [neutral_prompt(occupation)] * m,
                                     [image_seed(cfg.seed + 1, o, i) for i in range(m)],
                                     description=neutral_prompt(occupation), **gen)
            tones = oracle.predict_proba(images)["tone"].argmax(-1).numpy()
            generated = distribution(tones, k)
            target = web.tone_given_occupation[web.occupations.index(occupation)]
            rows[occupation] = {"generated": generated.round(3).tolist(),
                                "web": np.round(target, 3).tolist(),
                                "tv": round(total_variation(generated, target), 3), "n": m}
        write_json_atomic(out / "tone_by_occupation.json", rows)
        manifest["results"] = {"tone_by_occupation": rows, "seconds": round(time.perf_counter() - start, 1)}

    table = Table(title=f"Skin tone of '{neutral_prompt('<occupation>')}' generations "
                        f"(guidance {cfg.guidance_scale}, {cfg.n_per_occupation} images each, "
                        "oracle-read) vs the web corpus")
    table.add_column("occupation")
    for name in world.tone_names:
        table.add_column(name, justify="right")
    table.add_column("TV to web", justify="right")
    for occupation, row in rows.items():
        cells = [f"{g:.0%} [dim]({w:.0%})[/dim]" for g, w in zip(row["generated"], row["web"])]
        table.add_row(occupation, *cells, f"{row['tv']:.2f}")
    output.print(table)
    noise = np.mean([expected_tv_noise(np.array(r["web"]), cfg.n_per_occupation) for r in rows.values()])
    info(f"cells: generated share (web share). Sampling noise alone gives TV ~ {noise:.2f} at "
         f"n={cfg.n_per_occupation}. Grid: {out / 'grid.png'}")
    return out
