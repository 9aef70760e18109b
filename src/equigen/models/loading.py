"""The one place that turns a model name into a text-to-image pipeline.

A model is either a local diffusers folder (``model_index.json`` + components) or a Hugging Face hub
id (``owner/name``). Loading is offline by default: a hub id must already be in the local cache,
and a missing model fails before diffusers is even imported (it takes seconds to import), with a
message that names what was looked for and how to get it. Weights load only from safetensors.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from equigen.errors import EquigenError
from equigen.utils.keywords import KeywordDetector

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
MODEL_INDEX = "model_index.json"
EXTERNAL_COMPONENTS = "equigen_components.json"
# Samplers by short name -> diffusers scheduler class (built from the pipeline's own noise schedule).
SAMPLERS = {
    "dpm++2m": "DPMSolverMultistepScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
}
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def quiet_hf_libraries() -> None:
    """Keep diffusers / transformers / hub progress bars and advisory warnings off our console.

    Environment variables, so that it holds whichever of those libraries is imported later.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def set_offline(offline: bool = True) -> None:
    """Tell huggingface_hub / transformers / diffusers not to reach the network.

    Must run before those libraries are imported (they read the variables at import time); the
    CLI does it first thing. Library callers also get ``local_files_only=True`` from
    :func:`load_pipeline`, which works whatever the environment says.
    """
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)


@dataclass(frozen=True)
class ModelSource:
    """Where a pipeline will be loaded from: a local folder, or a hub id (cached or to download)."""

    name: str
    path: Path | None  # local folder or the cached snapshot; None when it will be downloaded
    hub_id: str | None = None


def resolve_model_source(name: str | os.PathLike[str], allow_download: bool = False) -> ModelSource:
    """Find a model without importing diffusers; raise a clear :class:`EquigenError` if absent."""
    text = str(name)
    if text in NAMED_MODELS:
        return ModelSource(text, NAMED_MODELS[text]())
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / MODEL_INDEX).is_file():
            raise EquigenError(
                f"model folder {path} has no {MODEL_INDEX}: expected a diffusers pipeline folder "
                "as written by pipe.save_pretrained(...)"
            )
        return ModelSource(text, path)
    if not HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise EquigenError(f"model {text!r}: no such folder, and not a hub id of the form owner/name")
    cached = _cached_snapshot(text)
    if cached is not None:
        return ModelSource(text, cached, hub_id=text)
    if allow_download:
        return ModelSource(text, None, hub_id=text)
    from huggingface_hub import constants

    raise EquigenError(
        f"model {text!r} is not a local folder and not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); equigen is offline by default. Either download it where there "
        f"is internet (`hf download {text}`) and pass the folder, or pass --allow-download."
    )


def _mini_world_dir() -> Path:
    from equigen.world.model import SHIPPED_DIR

    if not (SHIPPED_DIR / MODEL_INDEX).is_file():
        raise EquigenError(f"the mini-world model is not installed (looked in {SHIPPED_DIR}); "
                           "train it with `equigen world train-base`")
    return SHIPPED_DIR


# Models known by name: name -> function returning the folder.
NAMED_MODELS = {"mini-world": _mini_world_dir}


def _external_components(folder: Path) -> dict[str, Any]:
    """Components a folder declares it does not hold (the mini-world's 90 MB text encoder)."""
    manifest = folder / EXTERNAL_COMPONENTS
    if not manifest.is_file():
        return {}
    wanted = json.loads(manifest.read_text())
    if wanted.get("text_encoder") == "minilm":
        from equigen.world.model import load_text_encoder

        text_encoder, tokenizer = load_text_encoder()
        return {"text_encoder": text_encoder, "tokenizer": tokenizer}
    raise EquigenError(f"{manifest}: unknown external components {wanted}")


def _cached_snapshot(hub_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, MODEL_INDEX)
    return Path(found).parent if isinstance(found, str) else None


def pick_device(requested: str | None = None) -> "torch.device":
    """``requested`` if given (an unavailable CUDA is an error), else cuda when present, else cpu."""
    import torch

    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EquigenError(f"device {requested!r} requested but CUDA is not available here")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(requested: str | None, device: "torch.device") -> "torch.dtype":
    """fp16 on CUDA and fp32 on CPU unless asked otherwise (fp32/fp16/bf16)."""
    import torch

    if requested is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if requested not in DTYPES:
        raise EquigenError(f"dtype {requested!r} is not one of: {', '.join(sorted(DTYPES))}")
    return getattr(torch, DTYPES[requested])


def load_pipeline(
    name: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_download: bool = False,
    attention_slicing: bool = False,
    vae_slicing: bool = False,
    sampler: str | None = None,
    **from_pretrained_kwargs: Any,
) -> "DiffusionPipeline":
    """Load a text-to-image pipeline from a local diffusers folder or a hub id.

    ``DiffusionPipeline`` picks the class from ``model_index.json`` (SD 1.x/2.x, SDXL, the
    mini-world's). Example::

        pipe = load_pipeline("runs/my-model", device="cpu")
        image = pipe("a photo of a doctor", num_inference_steps=20).images[0]

    ``sampler`` (a key of :data:`SAMPLERS`) replaces the folder's scheduler by that sampler on
    the same noise schedule; None keeps the folder's.
    """
    check_sampler(sampler)
    source = resolve_model_source(name, allow_download=allow_download)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)

    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {
        _dtype_keyword(): torch_dtype,
        "use_safetensors": True,
        "local_files_only": source.path is not None,
    }
    if source.path is not None:
        external = _external_components(source.path)
        if external:  # diffusers warns that a BERT text encoder is not CLIP's: it is on purpose
            diffusers_logging.set_verbosity_error()
        kwargs.update(external)
    kwargs.update(from_pretrained_kwargs)
    target = str(source.path) if source.path is not None else source.hub_id
    try:
        pipe = DiffusionPipeline.from_pretrained(target, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise EquigenError(f"could not load model {source.name!r} from {target}: {exc}") from exc
    if sampler is not None:
        set_sampler(pipe, sampler)
    pipe = pipe.to(torch_device)
    if attention_slicing:
        pipe.enable_attention_slicing()
    if vae_slicing and hasattr(pipe, "vae"):
        pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_sampler(sampler: str | None) -> None:
    if sampler is not None and sampler not in SAMPLERS:
        raise EquigenError(f"sampler {sampler!r} is not one of: {', '.join(SAMPLERS)}")


def set_sampler(pipe: "DiffusionPipeline", sampler: str) -> None:
    """Swap ``pipe.scheduler`` for ``sampler`` (see :data:`SAMPLERS`), keeping its noise schedule
    and prediction type. The samplers of one model can draw each mode of a prompt at different
    rates (``bench/samplers.py`` measures it on the mini-world), so an audit states its sampler."""
    import diffusers

    check_sampler(sampler)
    pipe.scheduler = getattr(diffusers, SAMPLERS[sampler]).from_config(pipe.scheduler.config)


def _dtype_keyword() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (0.36); use whichever this version takes."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def check_lora_path(path: Path) -> None:
    """Fail before any model loads when LoRA weights are not where they are said to be."""
    if not path.exists():
        raise EquigenError(f"LoRA {path}: not found (expected a folder written by "
                           "save_lora_weights, holding pytorch_lora_weights.safetensors, or a "
                           ".safetensors file)")


LORA_SCOPE = "equigen_lora.json"  # beside the weights: {"scope": [words]} (`equigen scoft train`)


class LoraScope:
    """The prompts a LoRA is meant for: those that name one of its words (a culture LoRA is for
    prompts about its cultures; every other prompt is drawn by the model without it)."""

    def __init__(self, words: list[str]):
        self.words = list(words)
        self.detector = KeywordDetector(self.words)

    def applies_to(self, prompt: str) -> bool:
        return self.detector(prompt)

    def __repr__(self) -> str:
        return f"LoraScope({self.words})"


def write_lora_scope(folder: Path, words: list[str]) -> None:
    from equigen.utils.io import write_json_atomic

    write_json_atomic(Path(folder) / LORA_SCOPE, {"scope": list(words)})


def read_lora_scope(path: Path) -> LoraScope | None:
    """The scope saved beside LoRA weights (``path``: their folder or file); None when there is
    none, or it is empty: the LoRA then applies to every prompt."""
    folder = path if path.is_dir() else path.parent
    meta = folder / LORA_SCOPE
    if not meta.is_file():
        return None
    try:
        words = json.loads(meta.read_text())["scope"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EquigenError(f"{meta}: expected {{\"scope\": [words]}} ({exc})") from exc
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise EquigenError(f"{meta}: 'scope' must be a list of words, got {words!r}")
    return LoraScope(words) if any(w.strip() for w in words) else None


def apply_lora(pipe: "DiffusionPipeline", path: str | os.PathLike[str],
               everywhere: bool = False) -> LoraScope | None:
    """Load diffusers-format LoRA weights into ``pipe`` (a folder as written by
    ``save_lora_weights``, or one ``.safetensors`` file).

    A LoRA saved with a scope (:data:`LORA_SCOPE`, written by ``equigen scoft train``) stays
    unfused and the scope is returned: pass it to
    :func:`~equigen.models.generate.generate_images`, which switches the LoRA off for prompts
    outside it. Otherwise (no scope, or ``everywhere``) the LoRA is fused into the weights (no
    extra matmuls per step) and applies to every prompt; None is returned.
    """
    path = Path(path)
    check_lora_path(path)
    if not hasattr(pipe, "load_lora_weights"):
        raise EquigenError(f"LoRA {path}: a {type(pipe).__name__} cannot load LoRA weights")
    scope = None if everywhere else read_lora_scope(path)
    target, kwargs = (path.parent, {"weight_name": path.name}) if path.is_file() else (path, {})
    try:
        pipe.load_lora_weights(str(target), **kwargs)
    except ImportError as exc:
        raise EquigenError(f"LoRA {path}: loading LoRA weights needs peft ({exc})") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise EquigenError(f"LoRA {path}: could not load it into {type(pipe).__name__} "
                           f"(expected diffusers LoRA weights, e.g. a folder with "
                           f"pytorch_lora_weights.safetensors): {exc}") from exc
    if scope is None:
        pipe.fuse_lora()
    else:
        from equigen.utils.console import info

        info(f"LoRA {path}: applied to prompts that name {', '.join(scope.words)} "
             f"(its saved scope; --lora-everywhere applies it to every prompt)")
    return scope


def compile_unet(pipe: "DiffusionPipeline") -> None:
    """Compile the pipeline's UNet with ``torch.compile`` (inductor), in place, for inference.

    For long generation jobs: the first call of each batch shape pays the compilation, every later
    call runs faster (bench/synth_speed.py ``--compile``). On CPU the UNet also switches to
    channels-last memory and inductor *freezes* its weights into the graph (constants folded,
    convolution weights prepacked for oneDNN), which is only valid while the weights do not change:
    load (and fuse) any LoRA before, and train nothing after.
    """
    import torch

    on_cpu = pipe.unet.device.type == "cpu"
    if on_cpu:
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet, dynamic=False, options={"freezing": True} if on_cpu else None)
