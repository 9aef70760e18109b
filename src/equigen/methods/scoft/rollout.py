"""Differentiable denoising from a training x_t down to an image, for SCoFT's L_C and L_P.

From the noisy latent x_t at each sample's own timestep t_b, ``steps`` deterministic DDIM updates
with classifier-free guidance go down to a clean latent (timesteps t_b (n - j) / n, j = 0..n-1,
then alpha_bar = 1), and the VAE decodes it. Exactly one UNet call carries gradient (``first``,
as in the paper; or ``last`` / ``random``); every other call runs without a graph, but its
output still enters the linear DDIM updates, so the gradient flows from the decoded image back
through every later update and the decoder to that one call. The official script's
crash at t = 0 cannot happen: training timesteps are drawn from [1, T - 1].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

GradCall = Literal["first", "last", "random"]


def split_prediction(prediction: Tensor, x: Tensor, alpha_bar: Tensor,
                     prediction_type: str) -> tuple[Tensor, Tensor]:
    """(eps, x0) from the UNet output for epsilon- or v-prediction models."""
    a = alpha_bar.sqrt().view(-1, 1, 1, 1)
    s = (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        eps = prediction
        return eps, (x - s * eps) / a
    if prediction_type == "v_prediction":
        return a * prediction + s * x, a * x - s * prediction
    raise ValueError(f"prediction_type {prediction_type!r}: expected epsilon or v_prediction")


def grad_call_index(mode: GradCall, steps: int, generator: torch.Generator) -> int:
    if mode == "first":
        return 0
    if mode == "last":
        return steps - 1
    if mode == "random":
        return int(torch.randint(steps, (1,), generator=generator))
    raise ValueError(f"grad call {mode!r}: expected first, last or random")


def guided_prediction(unet, x: Tensor, t: Tensor, cond: Tensor, uncond: Tensor,
                      guidance: float) -> Tensor:
    both = unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
    unconditional, conditional = both.chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def denoise_to_latent(unet, x_t: Tensor, t: Tensor, cond: Tensor, uncond: Tensor,
                      alphas_cumprod: Tensor, prediction_type: str, steps: int = 20,
                      guidance: float = 4.5, grad_call: int = 0) -> Tensor:
    """Run ``steps`` guided DDIM updates from (x_t, t) to a clean latent (see module doc)."""
    alphas_cumprod = alphas_cumprod.to(x_t.device, torch.float32)
    one = torch.ones_like(t, dtype=torch.float32)
    x = x_t
    for j in range(steps):
        t_now = torch.div(t * (steps - j), steps, rounding_mode="floor").clamp_min(1)
        alpha_now = alphas_cumprod[t_now]
        if j + 1 < steps:
            alpha_next = alphas_cumprod[torch.div(t * (steps - j - 1), steps,
                                                  rounding_mode="floor").clamp_min(1)]
        else:
            alpha_next = one
        if j == grad_call:
            prediction = guided_prediction(unet, x, t_now, cond, uncond, guidance)
        else:
            with torch.no_grad():
                prediction = guided_prediction(unet, x, t_now, cond, uncond, guidance)
        eps, x0 = split_prediction(prediction.float(), x.float(), alpha_now, prediction_type)
        x = alpha_next.sqrt().view(-1, 1, 1, 1) * x0 + (1 - alpha_next).sqrt().view(-1, 1, 1, 1) * eps
    return x


def decode_latent(vae, latent: Tensor, use_checkpoint: bool = False) -> Tensor:
    """VAE decode to an image in [0, 1] (differentiable; optionally gradient-checkpointed)."""
    scaled = latent / vae.config.scaling_factor
    scaled = scaled.to(vae.dtype)
    if use_checkpoint:
        image = checkpoint(lambda z: vae.decode(z).sample, scaled, use_reentrant=False)
    else:
        image = vae.decode(scaled).sample
    return (image.float() / 2 + 0.5).clamp(0, 1)
