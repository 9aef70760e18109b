"""A user-supplied image classifier as an annotator: a timm model whose head reads every attribute.

A classifier is a folder::

    my_classifier/
      model.safetensors     the timm model's state dict
      config.json           {"arch": "resnet50", "image_size": 224,
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                             "attributes": {"gender": ["man", "woman"],
                                            "age": ["young", "middle-aged", "old"]},
                             "abstain_below": 0.6}          # optional; or {"age": 0.6}

The model is ``timm.create_model(arch, pretrained=False, num_classes=sum of group counts)``; its
output is the concatenation of every attribute's logits, in the order of ``attributes`` (above:
columns 0-1 gender, 2-4 age). Each attribute's probabilities are the softmax of its own slice.
Write one with :func:`save_classifier`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence, Union

from pydantic import Field, model_validator, ValidationError, field_validator

from equigen.config import StrictModel, format_validation_error
from equigen.audit.annotators import check_thresholds
from equigen.errors import EquigenError

if TYPE_CHECKING:
    import torch
    from PIL import Image

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ClassifierConfig(StrictModel):
    """``config.json`` of a classifier folder."""

    arch: str = Field(min_length=1)
    image_size: int = Field(ge=1)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    attributes: dict[str, list[str]]
    # one threshold for every attribute, or {attribute: threshold}
    abstain_below: Union[Annotated[float, Field(ge=0.0, le=1.0)],
                         dict[str, Annotated[float, Field(ge=0.0, le=1.0)]], None] = None

    @field_validator("attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value:
            raise ValueError("at least one attribute is needed")
        for attribute, groups in value.items():
            if len(groups) < 2 or len(set(groups)) != len(groups):
                raise ValueError(f"attribute {attribute!r} needs 2 or more distinct groups, got {groups}")
        return value

    @model_validator(mode="after")
    def _check_thresholds(self) -> "ClassifierConfig":
        check_thresholds(self.abstain_below, self.attributes)
        return self

    @property
    def num_classes(self) -> int:
        return sum(len(g) for g in self.attributes.values())


class ClassifierAnnotator:
    """A timm classifier behind the :class:`~equigen.audit.annotators.Annotator` interface."""

    def __init__(self, model: Any, config: ClassifierConfig, batch_size: int = 64,
                 device: "torch.device | str | None" = None):
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = model.eval().to(self.device)
        self.config = config
        self.groups = {a: list(g) for a, g in config.attributes.items()}
        self.abstain_below = config.abstain_below
        self.batch_size = batch_size
        self._mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std).view(1, 3, 1, 1)

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None,
             batch_size: int = 64) -> "ClassifierAnnotator":
        folder = Path(folder)
        config_path, weights = folder / CONFIG, folder / WEIGHTS
        if not config_path.is_file() or not weights.is_file():
            missing = [p.name for p in (config_path, weights) if not p.is_file()]
            raise EquigenError(f"no classifier in {folder}: missing {', '.join(missing)} (a "
                               f"classifier folder holds {WEIGHTS} + {CONFIG}; write one with "
                               "equigen.audit.classifier_annotator.save_classifier)")
        try:
            config = ClassifierConfig.model_validate(json.loads(config_path.read_text()))
        except json.JSONDecodeError as exc:
            raise EquigenError(f"{config_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        except ValidationError as exc:
            raise EquigenError(format_validation_error(exc, ClassifierConfig, str(config_path))) from exc

        import timm
        from safetensors.torch import load_file

        from equigen.models.loading import pick_device

        try:
            model = timm.create_model(config.arch, pretrained=False, num_classes=config.num_classes)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise EquigenError(f"{config_path}: arch {config.arch!r} is not a timm model ({exc})") from exc
        try:
            model.load_state_dict(load_file(weights))
        except RuntimeError as exc:
            raise EquigenError(f"{weights} does not fit timm model {config.arch!r} with "
                               f"{config.num_classes} outputs: {str(exc).splitlines()[0]}") from exc
        return cls(model, config, batch_size=batch_size, device=pick_device(device))

    def _pixels(self, images: "Sequence[Image.Image] | torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        from equigen.audit.annotators import images_to_tensor

        size = self.config.image_size
        x = images_to_tensor(images, size)
        if x.shape[-2:] != (size, size):  # tensors are not resized by images_to_tensor
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return (x - self._mean) / self._std

    def logits(self, images: "Sequence[Image.Image] | torch.Tensor") -> "torch.Tensor":
        """The head's concatenated logits [N, sum K]."""
        import torch

        outs = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = self._pixels(images[start : start + self.batch_size]).to(self.device)
                outs.append(self.model(x).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0, self.config.num_classes)

    def predict_proba(self, images: "Sequence[Image.Image] | torch.Tensor") -> dict[str, "torch.Tensor"]:
        logits = self.logits(images)
        out, start = {}, 0
        for attribute, groups in self.groups.items():
            out[attribute] = logits[:, start : start + len(groups)].softmax(-1)
            start += len(groups)
        return out


def save_classifier(model: Any, folder: str | Path, attributes: dict[str, list[str]], *,
                    arch: str | None = None, image_size: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    abstain_below: float | dict[str, float] | None = None) -> Path:
    """Write a timm model as a classifier folder that ``classifier:FOLDER`` loads.

    ``arch``, ``image_size``, ``mean`` and ``std`` default to the model's own ``pretrained_cfg``
    (timm models carry it). The model's head must have one output per group of every attribute,
    in the order of ``attributes``.
    """
    from safetensors.torch import save_file

    from equigen.utils.io import atomic_path, write_json_atomic

    pretrained = dict(getattr(model, "pretrained_cfg", None) or {})
    arch = arch or pretrained.get("architecture")
    if image_size is None and "input_size" in pretrained:
        image_size = int(pretrained["input_size"][-1])
    mean = mean if mean is not None else pretrained.get("mean")
    std = std if std is not None else pretrained.get("std")
    if not arch or image_size is None or mean is None or std is None:
        raise EquigenError("save_classifier: give arch, image_size, mean and std (the model has no "
                           "timm pretrained_cfg to take them from)")
    config = ClassifierConfig(arch=arch, image_size=image_size, mean=list(mean), std=list(std),
                              attributes=attributes, abstain_below=abstain_below)
    outputs = getattr(model, "num_classes", None)
    if outputs is not None and outputs != config.num_classes:
        raise EquigenError(f"save_classifier: the model has {outputs} outputs but the attributes "
                           f"have {config.num_classes} groups in all")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
    write_json_atomic(folder / CONFIG, config.model_dump(mode="json", exclude_none=True))
    return folder
