"""Train a Fair Mapping and generate with it, with the Python API (no CLI).

    python examples/fairmap_and_generate.py                  # the mini-world, tone groups
    python examples/fairmap_and_generate.py --model path/to/diffusers-folder --steps 200

The map is trained on the text encoder's output only (the model stays frozen) and applied
through ``prompt_embeds``: prompts that already name a group are left alone.
"""

import argparse
from pathlib import Path

from equigen.methods.fairmap import FairMapConfig, FairMapping, train_fairmap
from equigen.models import load_pipeline
from equigen.models.generate import generate_images
from equigen.utils.images import image_grid

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default="mini-world")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--images", type=int, default=6)
parser.add_argument("--generation-steps", type=int, default=25)
parser.add_argument("--out", type=Path, default=Path("runs/example-fairmap"))
args = parser.parse_args()

config = FairMapConfig(
    model=args.model,
    attributes={"tone": {"groups": {"very light": "very light-skinned", "light": "light-skinned",
                                    "brown": "brown-skinned", "dark": "dark-skinned"},
                         "keywords": ["skin", "skinned"]}},
    templates=["a photo of a {group} {concept}", "a {group} {concept} at work"],
    concepts=["doctor", "chef", "farmer"],
    steps=args.steps,
    out=args.out,
)
pipe = load_pipeline(args.model)
mapping: FairMapping = train_fairmap(config, pipe=pipe)

prompts = ["a photo of a doctor", "a photo of a dark-skinned doctor"]
rows = []
for prompt in prompts:
    seeds = list(range(args.images))
    before = generate_images(pipe, [prompt] * args.images, seeds, steps=args.generation_steps)
    after = generate_images(pipe, [prompt] * args.images, seeds, steps=args.generation_steps,
                            prompt_encoder=mapping.encode)
    rows += [before, after]
    print(f"{prompt!r}: the map {'applies' if mapping.applies_to(prompt) else 'is skipped (names a group)'}")
grid = image_grid(rows, [f"{p} ({k})" for p in prompts for k in ("base", "Fair Mapping")])
grid.save(args.out / "before-after.png")
print("grid:", args.out / "before-after.png")
