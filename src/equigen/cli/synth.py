"""``equigen synth``: a synthetic image dataset (m images per caption) as WebDataset shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import (
    ConfigOption,
    FairmapOption,
    LoraEverywhereOption,
    LoraOption,
    ModelOption,
    SetOption,
    example,
    resolve_config,
    state,
)
from equigen.errors import EquigenError
from equigen.utils.console import output

EPILOG = example(
    "equigen synth captions.txt --m 10 --out runs/synth-base",
    "equigen synth --captions captions.jsonl --fairmap runs/fairmap --guidance 2 "
    "--out runs/synth-fair",
    "torchrun --nproc-per-node 8 -m equigen synth captions.csv --model runs/sd15 "
    "--set batch_size=64 --out /data/synth",
)


def synth(
    captions_file: Annotated[Optional[Path], typer.Argument(
        metavar="[CAPTIONS]", help="Captions file: .txt (one per line), .jsonl or .csv (a caption "
        "or text field, optional id).", show_default=False)] = None,
    captions: Annotated[Optional[Path], typer.Option(
        "--captions", help="The captions file (instead of the argument).",
        show_default=False)] = None,
    model: ModelOption = None,
    fairmap: FairmapOption = None,
    lora: LoraOption = None,
    lora_everywhere: LoraEverywhereOption = False,
    m: Annotated[Optional[int], typer.Option("--m", help="Images per caption.",
                                             show_default="10")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale.",
                                                      show_default="2.0")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder for the shards (resumes if "
                                                "it exists).", show_default="runs/synth")] = None,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the UNet: slower first batch (compilation), faster "
        "after; worth it for thousands of images.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate m images per caption as WebDataset tar shards (PNG + JSON metadata + caption),
    with index.json and manifest.json. Deterministic per (caption, image); a stopped run resumes;
    under torchrun / accelerate launch each rank makes its own shards."""
    from equigen.data.synth import SynthConfig, run_synth

    if captions_file is not None and captions is not None and captions_file != captions:
        raise EquigenError(f"two captions files given ({captions_file} and --captions "
                           f"{captions}); give one")
    if (captions_file is None and captions is None and config is None
            and not any(o.strip().startswith("captions=") for o in set_ or [])):
        raise EquigenError("no captions file: give one as the argument (equigen synth "
                           "captions.txt), with --captions, or as 'captions' in a --config file")
    cfg = resolve_config(SynthConfig, config, set_, captions=captions_file or captions, model=model,
                         fairmap=fairmap, lora=lora, lora_everywhere=lora_everywhere or None, m=m,
                         guidance_scale=guidance, out=out,
                         compile=compile_ or None)
    summary = run_synth(cfg, allow_download=state.allow_download)
    where = (f" (rank {summary['rank']} of {summary['world_size']})"
             if summary["world_size"] > 1 else "")
    output.print(f"{summary['images']} images in {summary['shards_written']} shard(s){where}, "
                 f"{summary['shards_skipped']} shard(s) already done; {summary['seconds']:.1f} s: "
                 f"{summary['images_per_s']:.2f} images/s")
    if summary["index"]:
        output.print(f"dataset: {cfg.out} (index: {summary['index']})")
