"""SCoFT's four loss terms (Liu et al., CVPR 2024, arXiv 2401.08053, eq. 1-5).

    L = w_ldm L_LDM + w_m L_M + w_c L_C + w_p L_P        official weights 0.7 / 0.3 / 0.05 / 0.01

- ``L_LDM``: the usual denoising MSE between the UNet's prediction under the curated caption and
  its target (the noise, or v for v-prediction models).
- ``L_M`` (memorization penalty): MSE between that prediction (with gradient) and the prediction
  for the same noisy latent and timestep under a *generic* caption of the same image (no
  gradient). It is zero when the two captions are equal; it keeps the model from binding the
  exact pixels of a tiny dataset to the curated words.
- ``L_C`` (self-contrastive perceptual loss): with x0_hat the image the model denoises x_t into,
  f a frozen perceptual embedding and d(u, v) = 1 - cos(u, v) (DreamSim's distance)::

      L_C = d(f(x0_hat), f(positive)) - mean_k d(f(x0_hat), f(negative_k))

  positive = the curated image; negatives = what the *base* model draws for the same caption.
  No margin (as in the paper). Pulls toward the curated look, away from the model's stereotype.
- ``L_P``: the mean over feature slices of the squared L2 distance between channel-normalised
  feature maps of x0_hat and of the positive (VGG16, 5 slices, in the paper).

Every function returns the batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ldm_loss", "memorization_loss", "perceptual_loss", "self_contrastive_loss",
           "cosine_distance"]


def ldm_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Denoising MSE: ``mean((prediction - target)^2)``."""
    return F.mse_loss(prediction.float(), target.float())


def memorization_loss(prediction: Tensor, generic_prediction: Tensor) -> Tensor:
    """``mean((prediction - sg(generic_prediction))^2)``: the curated-caption prediction is pulled
    toward the generic-caption one; no gradient reaches the generic branch."""
    return F.mse_loss(prediction.float(), generic_prediction.detach().float())


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` along the last dimension (broadcasting)."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)


def self_contrastive_loss(generated: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
    """``mean_b [ d(g_b, p_b) - mean_k d(g_b, n_bk) ]``.

    generated, positive: (B, D) embeddings; negatives: (B, K, D). Only ``generated`` should carry
    gradient (the others come from a frozen extractor on fixed images).
    """
    if negatives.dim() != 3 or negatives.shape[0] != generated.shape[0]:
        raise ValueError(f"negatives must be (B, K, D) with B = {generated.shape[0]}, "
                         f"got {tuple(negatives.shape)}")
    pull = cosine_distance(generated, positive)
    push = cosine_distance(generated.unsqueeze(1), negatives).mean(dim=1)
    return (pull - push).mean()


def _normalize_channels(feature: Tensor, eps: float = 1e-10) -> Tensor:
    return feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_loss(generated: list[Tensor], positive: list[Tensor]) -> Tensor:
    """``mean_s mean_{b,h,w} || n(g_s) - n(p_s) ||^2`` over feature slices s, with n the
    L2 normalisation over channels (an LPIPS without learned weights). Slices are (B, C, H, W)."""
    if len(generated) != len(positive) or not generated:
        raise ValueError("perceptual_loss needs the same non-zero number of slices for both")
    terms = [(_normalize_channels(g.float()) - _normalize_channels(p.float())).pow(2).sum(dim=1).mean()
             for g, p in zip(generated, positive)]
    return torch.stack(terms).mean()
