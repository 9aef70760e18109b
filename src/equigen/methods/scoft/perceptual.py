"""Frozen perceptual feature extractors for SCoFT's L_C and L_P, created by name (a registry).

Every extractor takes images in [0, 1], shape (B, 3, H, W), is differentiable with respect to
them (the gradient reaches the generated image), and has no trainable parameters:

- ``embed(x) -> (B, D)``: one vector per image, compared with 1 - cosine (L_C);
- ``slices(x) -> [(B, C, h, w), ...]``: feature maps at several depths (L_P).

Built once per training run. Registered names (``weights`` is a local file; nothing downloads):

=============  ==========================================================================
``oracle``      the mini-world oracle's conv trunk (4 slices); ``weights``: an oracle folder
``stablerep``   a ``equigen stablerep train`` run's encoder; ``weights``: the run folder
``vgg16``       torchvision VGG16, 5 slices (relu1_2 ... relu5_3) as in the paper;
                ``weights``: a state dict (.safetensors or .pth)
``timm``        any timm model, e.g. ``vit_small_patch14_dinov2.lvd142m`` (DINOv2)
``open_clip``   an open_clip image tower, e.g. ``ViT-B-16`` with its local checkpoint
``dreamsim``    DreamSim (the paper's choice; needs ``pip install dreamsim`` and its cache dir)
=============  ==========================================================================

Add one with ``@register("name")`` on a function ``(spec) -> PerceptualNet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equigen.config import StrictModel
from equigen.errors import EquigenError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualSpec(StrictModel):
    name: str = "oracle"
    model: Optional[str] = None  # timm / open_clip model name
    weights: Optional[Path] = None  # local weights file or folder (see the table above)
    image_size: Optional[int] = None  # resize inputs to this size (default: the model's own)


class PerceptualNet(nn.Module):
    """Base class: subclasses implement ``embed`` and optionally ``slices``."""

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def slices(self, x: Tensor) -> list[Tensor]:
        return [self.embed(x)[:, :, None, None]]


class StagedNet(PerceptualNet):
    """An extractor made of conv stages run in sequence: every stage's output is a slice, the
    embedding is the last slice averaged over space. Subclasses set ``stages`` and ``prepare``."""

    stages: nn.ModuleList

    def prepare(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def slices(self, x: Tensor) -> list[Tensor]:
        h, out = self.prepare(x), []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def embed(self, x: Tensor) -> Tensor:
        return self.slices(x)[-1].mean(dim=(2, 3))


_REGISTRY: dict[str, Callable[[PerceptualSpec], PerceptualNet]] = {}


def register(name: str):
    def wrap(factory: Callable[[PerceptualSpec], PerceptualNet]):
        _REGISTRY[name] = factory
        return factory
    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_perceptual(spec: PerceptualSpec | str) -> PerceptualNet:
    """Create the named extractor, frozen and in eval mode."""
    if isinstance(spec, str):
        spec = PerceptualSpec(name=spec)
    if spec.name not in _REGISTRY:
        raise EquigenError(f"perceptual extractor {spec.name!r} is unknown; "
                           f"available: {', '.join(available())}")
    if spec.weights is not None and not Path(spec.weights).exists():
        raise EquigenError(f"perceptual extractor {spec.name!r}: weights {spec.weights} not found")
    net = _REGISTRY[spec.name](spec)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _resize(x: Tensor, size: Optional[int]) -> Tensor:
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class _Normalized(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------------- extractors

class OracleTrunk(StagedNet):
    """The mini-world oracle's conv blocks: each block's output is a slice, the pooled last one
    the embedding."""

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        from equigen.world.oracle import OracleAnnotator

        oracle = OracleAnnotator.load(spec.weights)
        self.stages = nn.ModuleList(list(oracle.net.trunk)[:-2])  # drop pool + flatten
        self.size = spec.image_size or oracle.image_size

    def prepare(self, x: Tensor) -> Tensor:
        return _resize(x, self.size) * 2 - 1


class StableRepEncoder(PerceptualNet):
    """A StableRep / SimCLR encoder trained with ``equigen stablerep train`` (backbone features)."""

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        from equigen.methods.stablerep.train import load_encoder

        if spec.weights is None:
            raise EquigenError("perceptual extractor 'stablerep' needs weights: a stablerep run folder")
        self.encoder = load_encoder(spec.weights)
        self.size = spec.image_size or self.encoder.arch.image_size

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder.features(_resize(x, self.size))


class VGG16Slices(StagedNet):
    """torchvision VGG16 features cut after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    CUTS = (4, 9, 16, 23, 30)

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        from torchvision.models import vgg16

        if spec.weights is None:
            raise EquigenError("perceptual extractor 'vgg16' needs weights: a local VGG16 state "
                               "dict (.safetensors or .pth), e.g. torchvision's vgg16-397923af.pth")
        model = vgg16(weights=None)
        model.load_state_dict(_load_state_dict(Path(spec.weights)))
        layers = list(model.features)[: self.CUTS[-1]]
        bounds = (0, *self.CUTS)
        self.stages = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in zip(bounds, bounds[1:]))
        self.normalize = _Normalized()
        self.size = spec.image_size

    def prepare(self, x: Tensor) -> Tensor:
        return self.normalize(_resize(x, self.size))


class TimmEmbedding(PerceptualNet):
    """Pooled features of any timm model (``model``: e.g. a DINOv2 ViT), weights from a file."""

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        import timm

        if spec.model is None:
            raise EquigenError("perceptual extractor 'timm' needs model: a timm model name")
        self.model = timm.create_model(spec.model, pretrained=False, num_classes=0)
        if spec.weights is not None:
            try:
                missing, _ = self.model.load_state_dict(_load_state_dict(Path(spec.weights)),
                                                        strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise EquigenError(f"{spec.weights}: not weights of {spec.model} "
                                   f"({str(exc).splitlines()[1].strip()})") from exc
            if missing:
                raise EquigenError(f"{spec.weights}: not weights of {spec.model} "
                                   f"(missing {len(missing)} keys, e.g. {missing[0]})")
        config = self.model.pretrained_cfg
        self.normalize = _Normalized(config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD))
        self.size = spec.image_size or config.get("input_size", (3, 224, 224))[-1]

    def embed(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(_resize(x, self.size)))


class OpenClipEmbedding(PerceptualNet):
    """open_clip's image tower (``model`` e.g. ViT-B-16, ``weights`` its local checkpoint)."""

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        import open_clip

        if spec.model is None or spec.weights is None:
            raise EquigenError("perceptual extractor 'open_clip' needs model (e.g. ViT-B-16) and "
                               "weights (a local open_clip checkpoint)")
        model = open_clip.create_model(spec.model, pretrained=str(spec.weights))
        self.visual = model.visual
        size = self.visual.image_size
        self.size = spec.image_size or (size[0] if isinstance(size, (tuple, list)) else size)
        self.normalize = _Normalized(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)

    def embed(self, x: Tensor) -> Tensor:
        return self.visual(self.normalize(_resize(x, self.size)))


class DreamSimEmbedding(PerceptualNet):
    """DreamSim's ensemble embedding (``pip install dreamsim``; ``weights``: its cache dir)."""

    def __init__(self, spec: PerceptualSpec):
        super().__init__()
        try:
            from dreamsim import dreamsim
        except ImportError as exc:
            raise EquigenError("perceptual extractor 'dreamsim' needs the dreamsim package "
                               "(pip install dreamsim) and its weights in a local cache dir") from exc
        if spec.weights is None:
            raise EquigenError("perceptual extractor 'dreamsim' needs weights: its cache dir")
        self.model, _ = dreamsim(pretrained=True, cache_dir=str(spec.weights), device="cpu")
        self.size = spec.image_size or 224

    def embed(self, x: Tensor) -> Tensor:
        return self.model.embed(_resize(x, self.size))


register("oracle")(OracleTrunk)
register("stablerep")(StableRepEncoder)
register("vgg16")(VGG16Slices)
register("timm")(TimmEmbedding)
register("open_clip")(OpenClipEmbedding)
register("dreamsim")(DreamSimEmbedding)
