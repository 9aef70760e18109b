"""Tiny random-weight Stable-Diffusion components, for tests and for trying the toolkit in seconds.

They are real diffusers / transformers modules with small configs: a pipeline built here can be
saved with ``save_pretrained`` and loaded back through :func:`equigen.models.load_pipeline`,
exercising exactly the code path a real Stable Diffusion checkpoint takes.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

CLIP_MAX_LENGTH = 77
CLIP_VOCAB_SIZE = 49408


def clip_tokenizer_from_open_clip(model_max_length: int = CLIP_MAX_LENGTH) -> "CLIPTokenizer":
    """A transformers CLIPTokenizer built offline from open_clip's bundled BPE vocabulary.

    It is the same vocabulary as openai/clip-vit-large-patch14's tokenizer (token ids agree with
    ``open_clip.tokenize``), so nothing is downloaded.
    """
    import open_clip.tokenizer as oc_tok
    from transformers import CLIPTokenizer

    bpe_path = Path(oc_tok.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(oc_tok.bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"model_max_length": model_max_length})
        )
        return CLIPTokenizer.from_pretrained(str(folder))


def build_tiny_pipeline(seed: int = 0, image_size: int = 64) -> "StableDiffusionPipeline":
    """A random-weight StableDiffusionPipeline: VAE 8x down, small UNet, 2-layer CLIP text model."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
    torch.manual_seed(seed)
    text_dim = 32
    unet = UNet2DConditionModel(
        sample_size=image_size // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=text_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_MAX_LENGTH,
            projection_dim=text_dim,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer_from_open_clip(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
