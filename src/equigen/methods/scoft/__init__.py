"""SCoFT (Liu et al., CVPR 2024): self-contrastive LoRA fine-tuning on a small curated set.

Built so far: the negatives (the base model's own drawings of each curated caption). The
fine-tuning itself is issue #6.
"""

from equigen.methods.scoft.negatives import NegativesConfig, make_negatives

__all__ = ["NegativesConfig", "make_negatives"]
