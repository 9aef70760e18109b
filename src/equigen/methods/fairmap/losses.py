"""Fair Mapping's two losses and the embedding distance.

Notation: v is a neutral prompt's embedding (L tokens x D), v' = M(v) its mapped embedding, v_j the
embedding of the same prompt naming group j of an attribute with K groups ("a photo of a dark-skinned
doctor"). Loss = L_text + lambda * L_fair.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

EmbeddingDistance = Literal["l2", "cosine"]


def text_consistency(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L_text = mean_i ||v'_i - v_i||^2 / ||v_i||^2 over a batch of (B, L, D) embeddings.

    The squared change relative to the embedding's own size, so the same lambda means the same
    trade-off for encoders of different scale (MiniLM, CLIP).
    """
    change = (mapped - original).flatten(1).pow(2).sum(1)
    return (change / original.flatten(1).pow(2).sum(1).clamp_min(1e-12)).mean()


def fair_distance_penalty(distances: torch.Tensor) -> torch.Tensor:
    """L_fair = mean_i sum_j ((d_ij - dbar_i) / sg(dbar_i))^2, dbar_i = mean_k d_ik.

    ``distances`` is (B, K): the distance from each mapped neutral embedding to each of its K
    group-specific variants. Zero exactly when every group is equally far. Dividing by the
    (stop-gradient) mean distance makes it scale-free; the stop-gradient keeps the map from
    lowering the penalty by simply moving away from all groups at once.
    """
    if distances.dim() != 2 or distances.shape[1] < 2:
        raise ValueError(f"distances must be (batch, groups >= 2), got {tuple(distances.shape)}")
    mean = distances.mean(dim=1, keepdim=True)
    return (((distances - mean) / mean.detach().clamp_min(1e-12)) ** 2).sum(dim=1).mean()


def embedding_distance(mapped: torch.Tensor, groups: torch.Tensor,
                       kind: EmbeddingDistance = "l2") -> torch.Tensor:
    """d(v', v_j) between token-averaged embeddings: mapped (B, L, D), groups (B, K, L, D) -> (B, K).

    The average runs over all L positions, padding included, because the denoiser attends to all
    of them.
    """
    a = mapped.mean(dim=1).unsqueeze(1)  # (B, 1, D)
    b = groups.mean(dim=2)  # (B, K, D)
    if kind == "l2":
        return (a - b).norm(dim=-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)
    raise ValueError(f"unknown embedding distance {kind!r} (valid: l2, cosine)")
