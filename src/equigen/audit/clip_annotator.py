"""Zero-shot CLIP annotator: read attributes from images by comparing them with prompt ensembles.

Configured by a YAML file (see ``configs/annotators/clip-fairface.yaml``)::

    model: openai/clip-vit-large-patch14   # a local folder (save_pretrained) or a cached hub id
    abstain_below: 0.5                     # optional: abstain under this max probability
                                           # (or per attribute: {gender: 0.7, age: 0.5})
    batch_size: 32
    device: null                           # cuda when present, else cpu
    attributes:
      gender:
        man: ["a photo of a man", "a photo of a male person", ...]
        woman: ["a photo of a woman", ...]

For each attribute and group the text embedding is the normalised mean of the normalised embeddings
of the group's prompts (a prompt ensemble, Radford et al. 2021), computed once at load time. For
an image with normalised embedding v, ``P(group k) = softmax_k(logit_scale * <v, t_k>)``.

Loading follows :mod:`equigen.models.loading`: offline by default (a hub id must already be in the
Hugging Face cache), weights from safetensors only, and a missing model fails before transformers
is imported, with a message naming what was looked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence, Union

from pydantic import Field, model_validator, field_validator

from equigen.audit.annotators import check_thresholds
from equigen.config import StrictModel, load_config
from equigen.errors import EquigenError

if TYPE_CHECKING:
    import torch
    from PIL import Image

CLIP_CONFIG = "config.json"
SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")


class CLIPAnnotatorConfig(StrictModel):
    """The YAML file behind ``clip:CONFIG.yaml``."""

    model: str = Field(min_length=1)
    attributes: dict[str, dict[str, list[str]]]
    # one threshold for every attribute, or {attribute: threshold}
    abstain_below: Union[Annotated[float, Field(ge=0.0, le=1.0)],
                         dict[str, Annotated[float, Field(ge=0.0, le=1.0)]], None] = None
    batch_size: int = Field(32, ge=1)
    device: Optional[str] = None
    dtype: Optional[str] = None  # fp32 / fp16 / bf16; default fp16 on CUDA, fp32 on CPU

    @field_validator("attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        if not value:
            raise ValueError("at least one attribute is needed")
        for attribute, groups in value.items():
            if len(groups) < 2:
                raise ValueError(f"attribute {attribute!r} needs at least 2 groups, got {list(groups)}")
            for group, prompts in groups.items():
                if not prompts or any(not p.strip() for p in prompts):
                    raise ValueError(f"{attribute}.{group}: needs at least one non-empty prompt")
        return value

    @model_validator(mode="after")
    def _check_thresholds(self) -> "CLIPAnnotatorConfig":
        check_thresholds(self.abstain_below, self.attributes)
        return self


def resolve_clip_source(name: str, base: Path | None = None, allow_download: bool = False) -> str:
    """The folder (or, with ``allow_download``, the hub id) to load a CLIP model from.

    ``name`` is a folder (relative to the working directory, or else to ``base``, the config
    file's folder) holding a ``save_pretrained`` CLIP model, or a hub id in the local cache.
    Never imports transformers, so a missing model fails in milliseconds.
    """
    from equigen.models.loading import HUB_ID

    candidates = [Path(name).expanduser()]
    if base is not None and not Path(name).is_absolute():
        candidates.append(base / name)
    for path in candidates:
        if path.exists():
            if not path.is_dir() or not (path / CLIP_CONFIG).is_file():
                raise EquigenError(f"CLIP model folder {path} has no {CLIP_CONFIG}: expected a "
                                   "folder written by CLIPModel.save_pretrained(...) (plus the "
                                   "processor's save_pretrained)")
            if not any((path / f).is_file() for f in SAFETENSORS_NAMES):
                raise EquigenError(f"CLIP model folder {path} has no model.safetensors: equigen "
                                   "loads weights from safetensors only (re-save with "
                                   "save_pretrained(..., safe_serialization=True))")
            return str(path)
    if not HUB_ID.match(name) or name.startswith((".", "/", "~")):
        looked = ", ".join(str(p) for p in candidates)
        raise EquigenError(f"CLIP model {name!r}: no such folder (looked for {looked}), and not a "
                           "hub id of the form owner/name")
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(name, CLIP_CONFIG)
    if isinstance(found, str):
        return str(Path(found).parent)
    if allow_download:
        return name
    raise EquigenError(
        f"CLIP model {name!r} is not a local folder and not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); equigen is offline by default. Either download it where there "
        f"is internet (`hf download {name}`) and put a folder path in the annotator config, or pass "
        "--allow-download."
    )


def _embedding(output: Any) -> "torch.Tensor":
    """get_*_features returns a tensor (transformers 4) or an output with the projected pooler."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPAnnotator:
    """Zero-shot CLIP behind the :class:`~equigen.audit.annotators.Annotator` interface.

    ``abstain_below`` is the annotator's own confidence threshold: :func:`equigen.audit.annotate.
    annotate` uses it when not given one, so audits with this annotator abstain by default.
    """

    def __init__(self, model: Any, processor: Any, prompts: dict[str, dict[str, list[str]]],
                 abstain_below: float | dict[str, float] | None = None, batch_size: int = 32,
                 device: "torch.device | str | None" = None):
        import torch

        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.processor = processor
        self.prompts = {a: {g: list(p) for g, p in groups.items()} for a, groups in prompts.items()}
        self.groups = {a: list(groups) for a, groups in prompts.items()}
        self.abstain_below = abstain_below
        self.batch_size = batch_size
        self.dtype = next(model.parameters()).dtype
        self.logit_scale = float(model.logit_scale.exp().item())
        self.text_embeddings = self._group_embeddings()  # {attribute: [K, D]}, normalised

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def from_config(cls, cfg: CLIPAnnotatorConfig, base: Path | None = None,
                    allow_download: bool = False) -> "CLIPAnnotator":
        source = resolve_clip_source(cfg.model, base, allow_download)
        from equigen.models.loading import pick_device, pick_dtype, quiet_hf_libraries

        quiet_hf_libraries()
        device = pick_device(cfg.device)
        dtype = pick_dtype(cfg.dtype, device)
        from transformers import CLIPModel, CLIPProcessor

        local = Path(source).is_dir()  # a folder or a cached snapshot: never the network
        try:
            model = CLIPModel.from_pretrained(source, use_safetensors=True, local_files_only=local,
                                              **{_dtype_keyword(): dtype})
            processor = CLIPProcessor.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise EquigenError(f"could not load CLIP model {cfg.model!r} from {source}: {exc}") from exc
        return cls(model, processor, cfg.attributes, cfg.abstain_below, cfg.batch_size, device)

    @classmethod
    def load(cls, config_path: str | Path, allow_download: bool = False) -> "CLIPAnnotator":
        """Load from the YAML config file (``clip:CONFIG.yaml``)."""
        config_path = Path(config_path)
        cfg = load_config(CLIPAnnotatorConfig, config_path)
        return cls.from_config(cfg, base=config_path.parent, allow_download=allow_download)

    # ----------------------------------------------------------------------------- embeddings

    def _group_embeddings(self) -> dict[str, "torch.Tensor"]:
        """One normalised prompt-ensemble embedding per group: all prompts in one text batch."""
        import torch

        flat = [(a, g, p) for a, groups in self.prompts.items() for g, ps in groups.items() for p in ps]
        texts = [p for _, _, p in flat]
        with torch.no_grad():
            chunks = []
            for start in range(0, len(texts), 256):
                tokens = self.processor.tokenizer(texts[start : start + 256], padding=True,
                                                  truncation=True, return_tensors="pt")
                tokens = {k: v.to(self.device) for k, v in tokens.items()}
                chunks.append(_embedding(self.model.get_text_features(**tokens)).float())
            emb = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
        out: dict[str, torch.Tensor] = {}
        for attribute, groups in self.groups.items():
            rows = []
            for group in groups:
                idx = [i for i, (a, g, _) in enumerate(flat) if a == attribute and g == group]
                rows.append(torch.nn.functional.normalize(emb[idx].mean(0), dim=-1))
            out[attribute] = torch.stack(rows)
        return out

    def image_embeddings(self, images: "Sequence[Image.Image] | torch.Tensor") -> "torch.Tensor":
        """Normalised image embeddings [N, D] (float32), computed in batches of ``batch_size``."""
        import torch

        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                if isinstance(batch, torch.Tensor):  # float [N, 3, H, W] in [0, 1]
                    pixels = self.processor.image_processor(images=list(batch.float()),
                                                            do_rescale=False, return_tensors="pt")
                else:
                    pixels = self.processor.image_processor(images=[im.convert("RGB") for im in batch],
                                                            return_tensors="pt")
                values = pixels["pixel_values"].to(self.device, self.dtype)
                chunks.append(_embedding(self.model.get_image_features(pixel_values=values)).float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def predict_proba(self, images: "Sequence[Image.Image] | torch.Tensor") -> dict[str, "torch.Tensor"]:
        """{attribute: [N, K]}: softmax over groups of ``logit_scale * cos(image, group)``."""
        if len(images) == 0:
            import torch

            return {a: torch.zeros(0, len(g)) for a, g in self.groups.items()}
        v = self.image_embeddings(images)
        return {a: (self.logit_scale * v @ t.T).softmax(-1).cpu() for a, t in self.text_embeddings.items()}


def _dtype_keyword() -> str:
    """transformers 5 renamed ``torch_dtype`` to ``dtype``; use whichever this version takes."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return "dtype" if major >= 5 else "torch_dtype"
