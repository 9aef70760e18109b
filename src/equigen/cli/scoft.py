"""``equigen scoft``: SCoFT's negatives and its self-contrastive LoRA fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import (
    ConfigOption,
    LoraOption,
    ModelOption,
    SetOption,
    example,
    resolve_config,
    state,
)
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
from equigen.utils.console import output

app = typer.Typer(help="SCoFT: self-contrastive LoRA fine-tuning on a small curated set.",
                  no_args_is_help=True)


@app.command(epilog=example("equigen world export curated --out data/curated",
                            "equigen scoft negatives data/curated --k 4"))
def negatives(
    dataset: Annotated[Path, typer.Argument(help="Curated captioned dataset (metadata.jsonl).")],
    model: Annotated[Optional[str], typer.Option(help="The base model.",
                                                 show_default="mini-world")] = None,
    k: Annotated[Optional[int], typer.Option(help="Negatives per caption.", show_default="4")] = None,
    culture: Annotated[Optional[list[str]], typer.Option(help="Only rows of this culture "
                                                         "(repeatable).", show_default="all")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate k images of every caption with the base model and list them in the dataset's
    `negatives` column (resumable)."""
    from equigen.methods.scoft import NegativesConfig, make_negatives

    cfg = resolve_config(NegativesConfig, config, set_, dataset=dataset, model=model, k=k,
                         cultures=culture or None)
    made = make_negatives(cfg, allow_download=state.allow_download)
    output.print(f"{made} negatives generated in {dataset / 'negatives'}")


@app.command(epilog=example(
    "equigen scoft negatives data/curated --culture Kethu --culture Zuloa",
    "equigen scoft train --config configs/scoft/mini-world.yaml --out runs/scoft",
    "equigen audit --lora runs/scoft --prompts configs/prompts/mini-world-cultures.yaml --out runs/audit-scoft",
    "accelerate launch --num_processes 8 -m equigen scoft train --config my.yaml --set batch_size=4"))
def train(
    data: Annotated[Optional[Path], typer.Option(help="Curated captioned dataset with negatives.",
                                                 show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="The base model.",
                                                 show_default="mini-world")] = None,
    culture: Annotated[Optional[list[str]], typer.Option(help="Train on this culture "
                                                         "(repeatable).", show_default="all")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.", show_default="1000")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (resumes if it has a checkpoint).",
                                                show_default="runs/scoft")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune a LoRA on the UNet's attention with SCoFT's losses (0.7 L_LDM + 0.3 L_M +
    0.05 L_C + 0.01 L_P; set a weight to 0 to switch its term off). Writes diffusers-format
    LoRA weights (`--lora RUN` in audit / synth), loss.csv and a manifest; resumable."""
    from equigen.methods.scoft import ScoftConfig, train_scoft

    cfg = resolve_config(ScoftConfig, config, set_, data=data, model=model,
                         cultures=culture or None, steps=steps, out=out)
    summary = train_scoft(cfg, allow_download=state.allow_download)
    output.print(f"LoRA written to {summary['lora']} ({summary['steps']} steps, "
                 f"{summary['seconds']:.0f} s)")


@app.command(epilog=example(
    "equigen scoft memorization data/curated --lora runs/scoft --culture Kethu --culture Zuloa",
    "equigen scoft memorization data/ccub --model CompVis/stable-diffusion-v1-4 --lora runs/scoft "
    "--threshold 0.95 --features dreamsim:/models/dreamsim"))
def memorization(
    dataset: Annotated[Path, typer.Argument(help="The curated captioned dataset trained on.")],
    model: ModelOption = "mini-world",
    lora: LoraOption = None,
    culture: Annotated[Optional[list[str]], typer.Option(help="Only rows of this culture "
                                                         "(repeatable).", show_default="all")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Cosine similarity from which a generation counts as a near-copy.",
        show_default="calibrated on re-renders of the same scenes (mini-world data only)")] = None,
    features: Annotated[str, typer.Option(help="Feature space: pixels (mini-world: copies show "
                                          "in pixels), oracle, or any perceptual extractor "
                                          "NAME:WEIGHTS of the SCoFT registry.")] = "pixels",
    seed: Annotated[int, typer.Option(help="Seed of the generations.")] = 0,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = DEFAULT_GUIDANCE_SCALE,
    sample_steps: Annotated[int, typer.Option(min=1, help="Sampler steps.")] = DEFAULT_STEPS,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
) -> None:
    """Does the fine-tuned model copy its curated images? One generation per training caption,
    its nearest curated image in a feature space, and the share of near-copies with a 95%
    interval."""
    import numpy as np
    from PIL import Image

    from equigen.data.captioned import load_records, resolve_in_root
    from equigen.methods.scoft.memorization import (
        feature_function,
        near_copies,
        training_caption_images,
    )
    from equigen.models import load_pipeline
    from equigen.models.loading import apply_lora, check_lora_path
    from equigen.utils.io import write_json_atomic

    records = [r for r in load_records(dataset) if not culture or r.culture in culture]
    if not records:
        raise typer.BadParameter(f"{dataset}: no rows of culture {culture}")
    if lora is not None:
        check_lora_path(lora)
    extract = feature_function(features)
    pipe = load_pipeline(model, allow_download=state.allow_download)
    lora_scope = apply_lora(pipe, lora) if lora is not None else None
    generated = training_caption_images(pipe, records, seed=seed, guidance_scale=guidance,
                                        steps=sample_steps, lora_scope=lora_scope)
    curated = np.stack([np.asarray(Image.open(resolve_in_root(dataset, r.file_name)).convert("RGB")
                                   .resize(generated.shape[1:3][::-1])) for r in records])
    result = near_copies(generated, curated, records, extract, threshold)
    _, low, high = result["interval"]
    output.print(f"near-copies: {result['flagged']}/{result['n']} = {result['rate']:.1%} "
                 f"[{low:.1%}, {high:.1%}] (threshold {result['threshold']:.4f}, "
                 f"{result['threshold_source']}); mean nearest similarity "
                 f"{result['nearest_similarity_mean']:.3f}")
    if out is not None:
        write_json_atomic(out, {"dataset": str(dataset), "model": model,
                                "lora": None if lora is None else str(lora), **result})
