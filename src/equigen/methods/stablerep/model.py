"""The encoder StableRep trains: a timm backbone (created by name) + a 3-layer MLP projection head,
and for StableRep+ / CLIP a small text tower on frozen sentence embeddings."""

from __future__ import annotations

from pydantic import Field

import torch
from torch import nn

from equigen.config import StrictModel


class EncoderArch(StrictModel):
    backbone: str = "vit_tiny_patch16_224"  # any timm model name; keyword overrides below
    image_size: int = 64
    patch_size: int | None = 8  # ViTs only: 64 px / 8 = 8 x 8 tokens
    backbone_args: dict = Field(default_factory=dict)  # more timm keyword overrides (depth=2, ...)
    head: list[int] = Field(default_factory=lambda: [512, 512, 128], min_length=2)  # paper: 4096, 4096, 256

    def backbone_kwargs(self) -> dict:
        kwargs: dict = {"img_size": self.image_size, **self.backbone_args}
        if self.patch_size is not None:
            kwargs["patch_size"] = self.patch_size
        return kwargs


def mlp_head(width: int, dims: list[int]) -> nn.Sequential:
    """Linear-BN-ReLU for every hidden layer, then a plain Linear (StableRep's projection head)."""
    layers: list[nn.Module] = []
    for hidden in dims[:-1]:
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, dims[-1]))
    return nn.Sequential(*layers)


class ContrastiveEncoder(nn.Module):
    """``features`` (what a linear probe reads) and ``forward`` (the head's projection)."""

    def __init__(self, arch: EncoderArch):
        super().__init__()
        import timm

        self.arch = arch
        self.backbone = timm.create_model(arch.backbone, pretrained=False, num_classes=0,
                                          **arch.backbone_kwargs())
        self.head = mlp_head(self.backbone.num_features, arch.head)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class TextTower(nn.Module):
    """A trainable 2-layer projection of frozen sentence embeddings into the image space."""

    def __init__(self, text_width: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_width, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(text_embeddings)
