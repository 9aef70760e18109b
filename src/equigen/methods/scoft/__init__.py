"""SCoFT (Liu et al., CVPR 2024, arXiv 2401.08053): self-contrastive LoRA fine-tuning on a small
curated set, for faithful, non-stereotyped depiction of under-represented cultures.

    from equigen.methods.scoft import NegativesConfig, ScoftConfig, make_negatives, train_scoft
    make_negatives(NegativesConfig(dataset="data/curated", k=4))     # the base model's drawings
    train_scoft(ScoftConfig(data="data/curated", out="runs/scoft"))  # LoRA in runs/scoft

The losses are in :mod:`equigen.methods.scoft.losses`, the perceptual extractors (a registry) in
:mod:`equigen.methods.scoft.perceptual`, the differentiable rollout in
:mod:`equigen.methods.scoft.rollout`, the near-copy check in :mod:`equigen.methods.scoft.memorization`.
"""

from equigen.methods.scoft.negatives import NegativesConfig, make_negatives
from equigen.methods.scoft.train import LossWeights, ScoftConfig, train_scoft

__all__ = ["LossWeights", "NegativesConfig", "ScoftConfig", "make_negatives", "train_scoft"]
