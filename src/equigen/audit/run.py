"""``equigen audit``: generate n images per prompt, annotate them, measure, report.

Generation is resumable and reproducible: images are generated in fixed batches of the job list
(prompt x index), each image with its own seed (:func:`~equigen.audit.prompts.prompt_seed`), and
a batch is written only whole, so a stopped audit continues without regenerating finished images
and ends with exactly the results an uninterrupted run gives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from PIL import Image
from pydantic import field_validator

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

from equigen.audit.annotate import ABSTAINED, annotate, check_attributes, load_annotator
from equigen.audit.prompts import Prompt, PromptSet, load_prompt_set, prompt_seed
from equigen.audit.results import compute_results
from equigen.config import StrictModel
from equigen.errors import EquigenError
from equigen.manifest import run_manifest
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
from equigen.models.loading import check_sampler
from equigen.utils.console import info, make_progress
from equigen.utils.io import atomic_path, write_csv_atomic, write_json_atomic

RESULTS = "results.json"
ANNOTATIONS = "annotations.csv"


class AuditConfig(StrictModel):
    model: str = "mini-world"
    fairmap: Optional[Path] = None  # a Fair Mapping folder applied to the prompt embeddings
    lora: Optional[Path] = None  # diffusers LoRA weights (e.g. from `equigen scoft train`)
    lora_everywhere: bool = False  # apply the LoRA to every prompt, not only to its saved scope
    prompts: Path = Path("configs/prompts/mini-world-occupations.yaml")
    annotator: str = "oracle"
    n: int = 100  # images per prompt
    out: Path = Path("runs/audit")
    seed: int = 0
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    steps: int = DEFAULT_STEPS
    # None: the model's own scheduler. Samplers of one model can draw a different share of each
    # group (bench/samplers.py), so a bias figure states its sampler as it states its guidance.
    sampler: Optional[str] = None
    batch_size: int = 16
    abstain_below: Optional[float] = None  # label an image "abstained" under this confidence
    n_boot: int = 1000
    device: Optional[str] = None
    dtype: Optional[str] = None

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: Optional[str]) -> Optional[str]:
        try:
            check_sampler(value)
        except EquigenError as error:  # pydantic reports ValueErrors with the key's name
            raise ValueError(str(error)) from None
        return value


def image_path(out: Path, prompt: Prompt, index: int) -> Path:
    return out / "images" / prompt.id / f"{index:04d}.png"


def generate_missing(cfg: AuditConfig, prompt_set: PromptSet, allow_download: bool = False,
                     pipe: "DiffusionPipeline | None" = None) -> int:
    """Generate every image not on disk yet (with ``pipe`` if given, else ``cfg.model``; with
    ``cfg.lora`` applied to it); return how many were generated."""
    jobs = [(p, i) for p in prompt_set.prompts for i in range(cfg.n)]
    batches = [jobs[s : s + cfg.batch_size] for s in range(0, len(jobs), cfg.batch_size)]
    todo = [b for b in batches if not all(image_path(cfg.out, p, i).is_file() for p, i in b)]
    if not todo:
        return 0
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images

    if pipe is not None and cfg.sampler is not None:
        raise EquigenError(f"sampler {cfg.sampler!r} applies to a model the audit loads; for a "
                           "pipeline of your own, set pipe.scheduler before passing it")
    if pipe is None:
        pipe = load_pipeline(cfg.model, device=cfg.device, dtype=cfg.dtype,
                             allow_download=allow_download, sampler=cfg.sampler)
    lora_scope = None
    if cfg.lora is not None:
        from equigen.models.loading import apply_lora

        lora_scope = apply_lora(pipe, cfg.lora, everywhere=cfg.lora_everywhere)
    prompt_encoder = None
    if cfg.fairmap is not None:
        from equigen.methods.fairmap import FairMapping

        prompt_encoder = FairMapping.load(cfg.fairmap).encode
    done = 0
    with make_progress() as progress:
        task = progress.add_task("generating", total=len(jobs),
                                 completed=(len(batches) - len(todo)) * cfg.batch_size)
        for batch in todo:
            images = generate_images(
                pipe, [p.text for p, _ in batch], [prompt_seed(cfg.seed, p.text, i) for p, i in batch],
                guidance_scale=cfg.guidance_scale, steps=cfg.steps, batch_size=len(batch),
                prompt_encoder=prompt_encoder, lora_scope=lora_scope)
            for (prompt, index), image in zip(batch, images):
                path = image_path(cfg.out, prompt, index)
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    image.save(tmp, format="PNG")
            done += len(batch)
            progress.advance(task, len(batch))
    return done


GENERATION_KEYS = ("model", "fairmap", "lora", "lora_everywhere", "seed", "guidance_scale", "steps",
                   "sampler")


def check_resumable(cfg: AuditConfig) -> None:
    """Refuse to add images to a run folder made with other generation settings (the images
    would mix two models)."""
    manifest = cfg.out / "manifest.json"
    if not manifest.is_file():
        return
    try:
        before = json.loads(manifest.read_text()).get("config") or {}
    except json.JSONDecodeError:
        return
    now = cfg.model_dump(mode="json")
    changed = [k for k in GENERATION_KEYS if k in before and before[k] != now[k]]
    if changed:
        details = ", ".join(f"{k} was {before[k]!r}, now {now[k]!r}" for k in changed)
        raise EquigenError(f"{cfg.out} holds an audit made with other settings ({details}); "
                           f"give a new --out")


def run_audit(cfg: AuditConfig, allow_download: bool = False,
              pipe: "DiffusionPipeline | None" = None) -> dict[str, Any]:
    """Run (or resume) an audit; return the results document (also in ``out/results.json``).

    ``pipe``: audit a pipeline you built or modified yourself instead of loading ``cfg.model``
    (``cfg.model`` is then only recorded; name it so the run says what it audited)::

        pipe = StableDiffusionPipeline.from_pretrained("my/folder")
        run_audit(AuditConfig(model="my/folder + my scheduler", prompts=..., out=...), pipe=pipe)
    """
    prompt_set = load_prompt_set(cfg.prompts)
    annotator = load_annotator(cfg.annotator, allow_download=allow_download)
    check_attributes(annotator, prompt_set.attributes, str(cfg.prompts))
    check_resumable(cfg)
    with run_manifest(cfg.out, "audit", cfg, seed=cfg.seed) as manifest:
        start = time.perf_counter()
        generated = generate_missing(cfg, prompt_set, allow_download, pipe=pipe)
        generation_s = time.perf_counter() - start

        start = time.perf_counter()
        labels: dict[str, dict[str, np.ndarray]] = {}
        rows = []
        for prompt in prompt_set.prompts:
            images = [Image.open(image_path(cfg.out, prompt, i)).convert("RGB") for i in range(cfg.n)]
            read = annotate(annotator, images, prompt_set.attributes, cfg.abstain_below)
            labels[prompt.id] = {a: lab for a, (lab, _) in read.items()}
            rows += _annotation_rows(cfg, prompt_set, prompt, read)
        write_csv_atomic(cfg.out / ANNOTATIONS, rows)
        annotation_s = time.perf_counter() - start

        start = time.perf_counter()
        results = compute_results(prompt_set, labels, n_boot=cfg.n_boot, seed=cfg.seed)
        results["config"] = {k: v for k, v in cfg.model_dump(mode="json").items()
                             if k not in ("out", "device", "dtype")}
        write_json_atomic(cfg.out / RESULTS, results)
        metrics_s = time.perf_counter() - start
        manifest["results"] = {"images": len(prompt_set.prompts) * cfg.n, "generated": generated,
                               "generation_s": round(generation_s, 2),
                               "annotation_s": round(annotation_s, 2),
                               "metrics_s": round(metrics_s, 2)}
    from equigen.audit.report import write_report

    write_report([cfg.out], cfg.out / "report.html")
    info(f"audit written to {cfg.out} (report.html, results.json, annotations.csv)")
    return results


def _annotation_rows(cfg: AuditConfig, prompt_set: PromptSet, prompt: Prompt,
                     read: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    rows = []
    for i in range(cfg.n):
        row: dict[str, Any] = {"prompt_id": prompt.id, "prompt": prompt.text, "index": i,
                               "seed": prompt_seed(cfg.seed, prompt.text, i),
                               "file": image_path(cfg.out, prompt, i).relative_to(cfg.out).as_posix()}
        for attribute, (labels, probs) in read.items():
            groups = prompt_set.attributes[attribute].groups
            row[attribute] = "" if labels[i] == ABSTAINED else groups[labels[i]]
            for g, p in zip(groups, probs[i]):
                row[f"p_{attribute}_{g}"] = round(float(p), 4)
        rows.append(row)
    return rows


def load_results(run: Path) -> dict[str, Any]:
    path = Path(run) / RESULTS
    if not path.is_file():
        from equigen.errors import EquigenError

        raise EquigenError(f"{path}: not found (is {run} an audit folder?)")
    return json.loads(path.read_text())
