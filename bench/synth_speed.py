"""Synthetic-dataset throughput: ``equigen synth`` vs the plain one-image-at-a-time loop.

    python bench/synth_speed.py                          # mini-world, 8 captions x m=8, 25 steps
    python bench/synth_speed.py --captions 4 --m 4 --steps 5   # a quick smoke run

Baseline measured in the same run: the diffusers pipeline called once per caption and image, as
StableRep's official generation script does (``pipe(caption, num_inference_steps=steps,
guidance_scale=w, generator=...)``, each image saved as a PNG), on the same captions, seeds,
steps, sampler (the model's own scheduler) and guidance. synth is timed end to end (captions
file to finished shards, model loading included); the loop from its first call (model already
loaded). Target: synth >= 4x the loop's images/s.

``--compile``: synth with ``torch.compile`` on the UNet (the loop stays the plain pipeline). The
first shard then pays the compilation, so the figure at scale is the steady state, the images/s
of the later shards, also printed (use >= 2 shards, e.g. ``--captions 16``).

Also measured: the model-only ceiling, i.e. the images/s if nothing but the UNet (2 calls per
step with guidance, at synth's batch size) and the VAE decoder ran, on random inputs. Its ratio
to the loop is the most any batching can gain over the loop on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from equigen.data.synth import SynthConfig, run_synth
from equigen.models import load_pipeline
from equigen.models.generate import image_seed
from equigen.world.prompts import named_prompt
from equigen.world.scene import load_world


def bench_captions(n: int) -> list[str]:
    world = load_world()
    regions, jobs, settings = list(world.regions), list(world.occupations), list(world.settings)
    return [named_prompt(jobs[i % len(jobs)], regions[(i // 2) % len(regions)],
                         settings[i % len(settings)]) for i in range(n)]


@torch.no_grad()
def model_only_seconds_per_image(pipe, batch_size: int, steps: int, guided: bool,
                                 repeats: int = 2) -> float:
    """Seconds per image of the UNet calls and the VAE decode alone, at ``batch_size``."""
    unet, vae = pipe.unet, pipe.vae
    calls = 2 if guided else 1
    size = unet.config.sample_size
    latents = torch.randn(batch_size * calls, unet.config.in_channels, size, size)
    text, _ = pipe.encode_prompt(["a photo"], "cpu", 1, False)
    text = text.expand(batch_size * calls, -1, -1)
    timestep = torch.tensor(500)
    unet(latents, timestep, text)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        unet(latents, timestep, text)
    unet_s = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    vae.decode(latents[:batch_size] / vae.config.scaling_factor)
    vae_s = time.perf_counter() - start
    return (unet_s * steps + vae_s) / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-world")
    parser.add_argument("--captions", type=int, default=8, help="number of captions")
    parser.add_argument("--m", type=int, default=8, help="images per caption")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32, help="synth images per forward pass")
    parser.add_argument("--captions-per-shard", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="synth with a compiled UNet")
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    captions = bench_captions(args.captions)
    images = len(captions) * args.m
    folder = Path(tempfile.mkdtemp(prefix="synth-speed-"))
    try:
        # baseline: one caption, one image per pipeline call, every image saved
        pipe = load_pipeline(args.model)
        pipe(captions[0], num_inference_steps=2)  # warm-up
        scheduler = type(pipe.scheduler).__name__
        (folder / "loop").mkdir()
        start = time.perf_counter()
        for c, caption in enumerate(captions):
            for j in range(args.m):
                generator = torch.Generator().manual_seed(image_seed(0, c, j))
                image = pipe(caption, num_inference_steps=args.steps, guidance_scale=args.guidance,
                             generator=generator).images[0]
                image.save(folder / "loop" / f"{c:06d}_{j:02d}.png")
        loop_s = time.perf_counter() - start
        ceiling_s = model_only_seconds_per_image(pipe, min(args.batch_size, images), args.steps,
                                                 args.guidance > 1)
        del pipe

        captions_file = folder / "captions.txt"
        captions_file.write_text("\n".join(captions) + "\n")
        summary = run_synth(SynthConfig(
            captions=captions_file, model=args.model, m=args.m, steps=args.steps,
            guidance_scale=args.guidance, batch_size=args.batch_size,
            captions_per_shard=args.captions_per_shard, compile=args.compile,
            out=folder / "synth"), rank=0, world_size=1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    synth_ips = images / summary["seconds"]
    loop_ips = images / loop_s
    later = summary["shard_seconds"][1:]  # shards after the first (which pays any compilation)
    steady_ips = (images - args.captions_per_shard * args.m) / sum(later) if later else None
    result = {
        "model": args.model, "scheduler": scheduler, "captions": len(captions), "m": args.m,
        "images": images, "steps": args.steps, "guidance_scale": args.guidance,
        "batch_size": args.batch_size, "threads": args.threads, "compile": args.compile,
        "synth_images_per_s": round(synth_ips, 4),
        "synth_generation_images_per_s": round(images / summary["generation_s"], 4),
        "synth_steady_images_per_s": round(steady_ips, 4) if steady_ips else None,
        "steady_ratio": round(steady_ips / loop_ips, 3) if steady_ips else None,
        "first_shard_s": summary["shard_seconds"][0],
        "loop_images_per_s": round(loop_ips, 4),
        "ratio": round(synth_ips / loop_ips, 3),
        "model_only_images_per_s": round(1 / ceiling_s, 4),
        "model_only_ratio": round(1 / ceiling_s / loop_ips, 3),
        "synth_s": summary["seconds"], "loop_s": round(loop_s, 3),
    }
    print(f"synth: {synth_ips:.3f} images/s end to end "
          f"({result['synth_generation_images_per_s']:.3f} from model load to last shard); "
          f"plain loop (baseline, 1 caption x 1 image per call, same {args.steps} {scheduler} "
          f"steps, w={args.guidance}): {loop_ips:.3f} images/s; "
          f"ratio {result['ratio']:.2f}x (target >= 4x); model-only ceiling "
          f"{result['model_only_images_per_s']:.3f} images/s = {result['model_only_ratio']:.2f}x "
          f"the loop")
    if steady_ips:
        print(f"synth after its first shard ({result['first_shard_s']:.1f} s): {steady_ips:.3f} "
              f"images/s = {result['steady_ratio']:.2f}x the loop")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
