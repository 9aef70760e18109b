"""The demo job behind ``make demo``.

Until the mini-world ships (issue #3), the demo exercises the whole plumbing on a tiny
random-weight Stable Diffusion pipeline: build -> save (safetensors) -> load through the one
loader -> generate -> write a captioned dataset -> check it -> manifest. Its images are noise,
and it says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from equigen.config import StrictModel
from equigen.manifest import run_manifest
from equigen.utils.console import info, output, track


class DemoConfig(StrictModel):
    out: Path = Path("runs/demo")
    seed: int = 0
    prompts: list[str] = [
        "a photo of a doctor",
        "a photo of a teacher at the market",
        "a street in Avel",
    ]
    images_per_prompt: int = 2
    image_size: int = 64
    steps: int = 20
    guidance_scale: float = 4.0


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo; return the output folder."""
    import torch

    from equigen.data import write_records
    from equigen.data.check import check_dataset
    from equigen.models import load_pipeline
    from equigen.models.tiny import build_tiny_pipeline
    from equigen.utils.seed import seed_everything

    out = cfg.out
    info("[bold]equigen demo[/bold]: the mini-world model is not shipped yet (issue #3), so this "
         "runs a [italic]random-weight tiny pipeline[/italic] end to end; its images are noise.")
    timings: dict[str, float] = {}
    with run_manifest(out, "demo", cfg, seed=cfg.seed) as manifest:
        seed_everything(cfg.seed)
        start = time.perf_counter()
        model_dir = out / "model"
        build_tiny_pipeline(seed=cfg.seed, image_size=cfg.image_size).save_pretrained(
            model_dir, safe_serialization=True
        )
        pipe = load_pipeline(model_dir)
        timings["build_save_load_s"] = time.perf_counter() - start

        start = time.perf_counter()
        images_dir = out / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for p_idx, prompt in enumerate(track(cfg.prompts, "generating")):
            generator = torch.Generator().manual_seed(cfg.seed * 1000 + p_idx)
            result = pipe(
                prompt,
                num_images_per_prompt=cfg.images_per_prompt,
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance_scale,
                height=cfg.image_size,
                width=cfg.image_size,
                generator=generator,
            )
            for i, image in enumerate(result.images):
                name = f"images/p{p_idx:03d}_{i:03d}.png"
                image.save(out / name)
                rows.append({"file_name": name, "text": prompt})
        write_records(out, rows)
        timings["generate_s"] = time.perf_counter() - start

        report = check_dataset(out)
        manifest["results"] = {"images": len(rows), "dataset_ok": report.ok,
                               **{k: round(v, 3) for k, v in timings.items()}}
    output.print(f"wrote {len(rows)} images and {out / 'metadata.jsonl'} "
                 f"(dataset check: {'OK' if report.ok else 'errors'}) in "
                 f"{sum(timings.values()):.1f} s -> {out}")
    return out
