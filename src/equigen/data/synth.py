"""``equigen synth``: m images per caption, written as WebDataset shards, at any scale.

The job is the list (caption, image index) for every caption and index < m; image j of caption i
has the seed :func:`~equigen.models.generate.image_seed` (seed, i, j), so any image can be
regenerated alone. Shard s holds captions [s*C, (s+1)*C) (C = ``captions_per_shard``), generated
in fixed batches of ``batch_size`` images (many captions x m images per forward pass) and written
whole (see :mod:`equigen.data.shards`): the shards do not depend on how many processes made them.

Work is split by shard: rank r of W (from the arguments, else the ``RANK`` / ``WORLD_SIZE`` that
torchrun and ``accelerate launch`` set, else 0 of 1) does the shards s with s % W == r. There is
no coordinator: a shard that exists under its final name is finished and skipped, so a stopped
job resumes where it stopped, and whichever rank finds every shard present writes ``index.json``
(the same content whoever writes it). PNG encoding and tar writing run in a background thread
while the next shard is generated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from pydantic import Field

from equigen.config import StrictModel
from equigen.data.shards import Sample, sample_key, shard_name, write_shard
from equigen.errors import EquigenError
from equigen.models.loading import apply_lora, check_lora_path
from equigen.utils.console import info
from equigen.utils.io import write_json_atomic

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from equigen.models.generate import PromptEncoder
    from equigen.models.loading import LoraScope

INDEX = "index.json"
JOB = "job.json"
CAPTION_FIELDS = ("caption", "text")
CAPTION_FORMATS = (".txt", ".jsonl", ".csv")
MAX_PENDING_WRITES = 1  # shards waiting to be written while the next one is generated
# settings that decide the images: a run folder never mixes shards made with different ones
JOB_KEYS = ("model", "fairmap", "lora", "lora_everywhere", "m", "guidance_scale", "steps", "size",
            "seed", "captions_per_shard")


class SynthConfig(StrictModel):
    captions: Path  # .txt (one per line), .jsonl or .csv (a caption or text field; optional id)
    model: str = "mini-world"
    fairmap: Optional[Path] = None  # a Fair Mapping folder applied to the prompt embeddings
    lora: Optional[Path] = None  # diffusers LoRA weights (folder or .safetensors file)
    lora_everywhere: bool = False  # apply the LoRA to every caption, not only to its saved scope
    m: int = Field(10, ge=1)  # images per caption
    guidance_scale: float = 2.0  # StableRep's best for representation learning (paper: w 2-3)
    steps: int = Field(25, ge=1)
    size: Optional[int] = Field(None, ge=8)  # pixels; None: the model's native size
    seed: int = 0
    captions_per_shard: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=1)  # images per forward pass
    compile: bool = False  # torch.compile the UNet: pays off over thousands of images
    out: Path = Path("runs/synth")
    device: Optional[str] = None
    dtype: Optional[str] = None


@dataclass(frozen=True)
class Caption:
    index: int  # position in the captions file (non-empty entries), 0-based
    id: str  # the file's id, or str(index) when it gives none
    text: str
    line: int  # line in the file, 1-based (for messages)


# -- captions -----------------------------------------------------------------------------------

def load_captions(path: str | os.PathLike[str]) -> list[Caption]:
    """Read a captions file: ``.txt`` (one caption per non-empty line), ``.jsonl`` (an object per
    line with a ``caption`` or ``text`` field and an optional ``id``) or ``.csv`` (a header with a
    ``caption`` or ``text`` column and an optional ``id`` column). Ids must be unique."""
    path = Path(path)
    if not path.is_file():
        raise EquigenError(f"captions file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in CAPTION_FORMATS:
        raise EquigenError(f"{path}: unknown captions format {path.suffix or '(no extension)'!r}; "
                           f"expected one of {', '.join(CAPTION_FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EquigenError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    rows = {".txt": _txt_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows}[suffix](path, text)
    captions: list[Caption] = []
    seen: dict[str, int] = {}
    for line, caption, given_id in rows:
        index = len(captions)
        cid = str(index) if given_id is None or given_id == "" else str(given_id)
        if cid in seen:
            raise EquigenError(f"{path}, line {line}: id {cid!r} is already used on line "
                               f"{seen[cid]}; ids must be unique (or leave them out)")
        seen[cid] = line
        captions.append(Caption(index, cid, caption, line))
    if not captions:
        raise EquigenError(f"{path}: no captions in this file (expected {_format_help(suffix)})")
    return captions


def _format_help(suffix: str) -> str:
    return {".txt": "one caption per line",
            ".jsonl": 'one JSON object per line, e.g. {"caption": "a photo of a cat", "id": "7"}',
            ".csv": "a header row with a 'caption' or 'text' column (and optionally 'id')"}[suffix]


def _txt_rows(path: Path, text: str) -> list[tuple[int, str, Any]]:
    return [(n, line.strip(), None) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _caption_of(path: Path, line: int, row: dict[str, Any]) -> str:
    for name in CAPTION_FIELDS:
        if name in row:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise EquigenError(f"{path}, line {line}: field {name!r} must be a non-empty "
                                   f"string, got {value!r}")
            return value.strip()
    fields = ", ".join(map(repr, row)) or "none"
    raise EquigenError(f"{path}, line {line}: no 'caption' or 'text' field (fields here: "
                       f"{fields}); expected {_format_help(path.suffix.lower())}")


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, str, Any]]:
    rows = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EquigenError(f"{path}, line {n}: not valid JSON ({exc.msg}); expected "
                               f"{_format_help('.jsonl')}") from exc
        if not isinstance(row, dict):
            raise EquigenError(f"{path}, line {n}: expected a JSON object, got "
                               f"{type(row).__name__}; expected {_format_help('.jsonl')}")
        given = row.get("id")
        if given is not None and not isinstance(given, (str, int)):
            raise EquigenError(f"{path}, line {n}: 'id' must be a string or an integer, "
                               f"got {given!r}")
        rows.append((n, _caption_of(path, n, row), given))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if not header:
            return []
        header = [h.strip() for h in header]
        reader.fieldnames = header
        if not any(name in header for name in CAPTION_FIELDS):
            raise EquigenError(f"{path}, line 1: no 'caption' or 'text' column (columns: "
                               f"{', '.join(map(repr, header))}); expected {_format_help('.csv')}")
        rows = []
        for row in reader:
            row = {k: v for k, v in row.items() if k is not None}
            if not any((v or "").strip() for v in row.values()):
                continue  # a blank line
            rows.append((reader.line_num, _caption_of(path, reader.line_num, row),
                         (row.get("id") or "").strip() or None))
        return rows
    except csv.Error as exc:
        raise EquigenError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from exc


def captions_digest(captions: list[Caption]) -> str:
    """A fingerprint of the captions and their ids (what a resumed job must not change)."""
    digest = hashlib.sha256()
    for c in captions:
        digest.update(json.dumps([c.id, c.text]).encode("utf-8") + b"\n")
    return digest.hexdigest()


# -- ranks and shards ---------------------------------------------------------------------------

def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise EquigenError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): the arguments, else ``RANK`` / ``WORLD_SIZE`` from the environment
    (torchrun, ``accelerate launch``), else (0, 1)."""
    rank = _env_int("RANK") if rank is None else rank
    world_size = _env_int("WORLD_SIZE") if world_size is None else world_size
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise EquigenError(f"rank {rank} of world size {world_size}: need world size >= 1 and "
                           f"0 <= rank < world size")
    return rank, world_size


def shard_captions(n_captions: int, captions_per_shard: int, shard: int) -> range:
    """Indices of the captions shard ``shard`` holds."""
    return range(shard * captions_per_shard, min((shard + 1) * captions_per_shard, n_captions))


def n_shards(n_captions: int, captions_per_shard: int) -> int:
    return math.ceil(n_captions / captions_per_shard)


def _job_spec(cfg: SynthConfig, captions: list[Caption]) -> dict[str, Any]:
    values = cfg.model_dump(mode="json")
    return {"n_captions": len(captions), "captions_sha256": captions_digest(captions),
            **{k: values[k] for k in JOB_KEYS}}


def check_job(cfg: SynthConfig, captions: list[Caption]) -> None:
    """Record the job's settings in ``out/job.json``; refuse to add shards to a folder made with
    other captions or settings (its shards would mix two datasets)."""
    spec = _job_spec(cfg, captions)
    path = cfg.out / JOB
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except json.JSONDecodeError:
            before = None
        if isinstance(before, dict):
            changed = [k for k in spec if k in before and before[k] != spec[k]]
            if changed:
                details = ", ".join("the captions changed" if k == "captions_sha256" else
                                    f"{k} was {before[k]!r}, now {spec[k]!r}" for k in changed)
                raise EquigenError(f"{cfg.out} holds shards made with other settings ({details}); "
                                   "give a new --out")
            return
    write_json_atomic(path, spec)


# -- generation ---------------------------------------------------------------------------------

def _deduplicating(encoder: "PromptEncoder") -> "PromptEncoder":
    """A prompt encoder that runs the text encoder once per distinct prompt of a batch (a batch
    holds m copies of each caption)."""
    import torch

    def encode(pipe: "DiffusionPipeline", prompts: Any) -> "tuple[torch.Tensor, torch.Tensor]":
        unique = list(dict.fromkeys(prompts))
        embeds, negative = encoder(pipe, unique)
        if len(unique) == len(prompts):
            return embeds, negative
        position = {p: i for i, p in enumerate(unique)}
        where = torch.tensor([position[p] for p in prompts], device=embeds.device)
        return embeds[where], (negative[where] if negative is not None else None)

    return encode


def prompt_encoder_for(pipe: "DiffusionPipeline", cfg: SynthConfig,
                       fairmapping: Any = None) -> Optional["PromptEncoder"]:
    """``fairmapping``'s encoder if given, else the pipeline's own (Stable Diffusion 1.x/2.x
    style pipelines), each running once per distinct caption of a batch; None for other
    pipelines (they encode the prompts themselves)."""
    if fairmapping is not None:
        return _deduplicating(fairmapping.encode)
    from diffusers import StableDiffusionPipeline

    if not isinstance(pipe, StableDiffusionPipeline):
        return None
    guided = cfg.guidance_scale > 1.0

    def encode(pipe: Any, prompts: Any) -> Any:
        return pipe.encode_prompt(list(prompts), pipe._execution_device, 1, guided)

    return _deduplicating(encode)


def _pick_device(cfg: SynthConfig) -> str | None:
    """Under torchrun / accelerate on GPUs each rank takes the GPU of its LOCAL_RANK."""
    if cfg.device is not None:
        return cfg.device
    local = _env_int("LOCAL_RANK")
    if local is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local % torch.cuda.device_count()}"
    return None


def generate_shard(pipe: "DiffusionPipeline", cfg: SynthConfig, captions: list[Caption],
                   shard: int, prompt_encoder: Optional["PromptEncoder"],
                   size: int, lora_scope: Optional["LoraScope"] = None) -> list[Sample]:
    """Every image of shard ``shard``, in (caption, image index) order, ``batch_size`` per pass.
    Each image's metadata names the LoRA only if it was applied to that image's caption."""
    from equigen.models.generate import generate_images, image_seed

    jobs = [(captions[i], j) for i in shard_captions(len(captions), cfg.captions_per_shard, shard)
            for j in range(cfg.m)]
    seeds = [image_seed(cfg.seed, c.index, j) for c, j in jobs]
    images = generate_images(
        pipe, [c.text for c, _ in jobs], seeds, guidance_scale=cfg.guidance_scale, steps=cfg.steps,
        batch_size=cfg.batch_size, size=size, description=f"{shard_name(shard)}",
        prompt_encoder=prompt_encoder, lora_scope=lora_scope)
    settings = {"model": cfg.model, "guidance_scale": cfg.guidance_scale, "steps": cfg.steps,
                "size": size, "fairmap": _path_text(cfg.fairmap)}
    lora = _path_text(cfg.lora)
    return [
        Sample(sample_key(c.index, j), image, c.text,
               {"caption": c.text, "caption_id": c.id, "caption_index": c.index, "image_index": j,
                "seed": seed, **settings,
                "lora": lora if lora_scope is None or lora_scope.applies_to(c.text) else None})
        for (c, j), seed, image in zip(jobs, seeds, images, strict=True)
    ]


def _path_text(path: Path | None) -> str | None:
    return None if path is None else path.as_posix()


# -- index --------------------------------------------------------------------------------------

def write_index_if_complete(cfg: SynthConfig, captions: list[Caption]) -> Path | None:
    """Write ``out/index.json`` if every shard of the job exists (idempotent: any rank may)."""
    total = n_shards(len(captions), cfg.captions_per_shard)
    paths = [cfg.out / shard_name(s) for s in range(total)]
    if not all(p.is_file() for p in paths):
        return None
    shards = []
    for s, path in enumerate(paths):
        held = shard_captions(len(captions), cfg.captions_per_shard, s)
        first, last = captions[held[0]], captions[held[-1]]
        shards.append({"name": path.name, "samples": len(held) * cfg.m,
                       "captions": [first.index, last.index], "caption_ids": [first.id, last.id],
                       "bytes": path.stat().st_size})
    config = {k: v for k, v in cfg.model_dump(mode="json").items()
              if k not in ("out", "device", "dtype")}
    index = {"format": "webdataset", "members": ["png", "json", "txt"], "shards": shards,
             "n_shards": total, "captions": len(captions), "images_per_caption": cfg.m,
             "images": len(captions) * cfg.m,
             "captions_sha256": captions_digest(captions), "config": config}
    write_json_atomic(cfg.out / INDEX, index)
    return cfg.out / INDEX


# -- the job ------------------------------------------------------------------------------------

def run_synth(cfg: SynthConfig, rank: int | None = None, world_size: int | None = None,
              allow_download: bool = False) -> dict[str, Any]:
    """Generate (or resume) this rank's shards; return a summary (images, seconds, images/s)."""
    start = time.perf_counter()
    captions = load_captions(cfg.captions)
    rank, world_size = resolve_rank(rank, world_size)
    total = n_shards(len(captions), cfg.captions_per_shard)
    mine = [s for s in range(total) if s % world_size == rank]
    cfg.out.mkdir(parents=True, exist_ok=True)
    # the adapters are checked before the (slow) model load
    if cfg.lora is not None:
        check_lora_path(cfg.lora)
    fairmapping = None
    if cfg.fairmap is not None:
        from equigen.methods.fairmap import FairMapping

        fairmapping = FairMapping.load(cfg.fairmap)
    check_job(cfg, captions)
    todo = [s for s in mine if not (cfg.out / shard_name(s)).is_file()]
    info(f"synth: {len(captions)} captions x {cfg.m} images in {total} shard(s); rank {rank} of "
         f"{world_size}: {len(mine)} shard(s), {len(mine) - len(todo)} already done")
    # run_manifest writes out/manifest.json: one writer, rank 0
    manifest_cm = (run_manifest_for(cfg) if rank == 0 else nullcontext({}))
    with manifest_cm as manifest:
        images, generation_s, shard_seconds = _generate(cfg, captions, todo, fairmapping,
                                                        allow_download)
        index = write_index_if_complete(cfg, captions)
        seconds = time.perf_counter() - start
        summary = {"images": images, "shards_written": len(todo),
                   "shards_skipped": len(mine) - len(todo), "shards_total": total,
                   "rank": rank, "world_size": world_size, "seconds": round(seconds, 3),
                   "generation_s": round(generation_s, 3),
                   # generating each written shard (the first also pays any compilation)
                   "shard_seconds": [round(t, 3) for t in shard_seconds],
                   "images_per_s": round(images / seconds, 4) if images else 0.0,
                   "index": str(index) if index else None}
        manifest["results"] = summary
    if index is None:
        info(f"rank {rank} done; index.json is written once every shard exists")
    return summary


def run_manifest_for(cfg: SynthConfig) -> Any:
    from equigen.manifest import run_manifest

    return run_manifest(cfg.out, "synth", cfg, seed=cfg.seed)


def _generate(cfg: SynthConfig, captions: list[Caption], todo: list[int], fairmapping: Any,
              allow_download: bool) -> tuple[int, float, list[float]]:
    """Generate and write the shards ``todo``; return (images, seconds from load to last write,
    seconds spent generating each shard)."""
    if not todo:
        return 0, 0.0, []
    from equigen.models import compile_unet, load_pipeline

    start = time.perf_counter()
    pipe = load_pipeline(cfg.model, device=_pick_device(cfg), dtype=cfg.dtype,
                         allow_download=allow_download)
    lora_scope = None
    if cfg.lora is not None:
        lora_scope = apply_lora(pipe, cfg.lora, everywhere=cfg.lora_everywhere)
    if cfg.compile:
        if lora_scope is not None:
            raise EquigenError(f"--compile freezes the UNet's weights, so the LoRA {cfg.lora} "
                               f"cannot be switched off outside its scope ({lora_scope.words}); "
                               f"add --lora-everywhere or drop --compile")
        compile_unet(pipe)
    encoder = prompt_encoder_for(pipe, cfg, fairmapping)
    size = cfg.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = 0
    # the writer thread encodes PNGs and writes the tar of shard s while s+1 is generated; on a
    # stop (Ctrl-C) the executor's exit lets the shards already generated finish writing
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer") as pool:
        pending: deque[Future[Path]] = deque()
        shard_seconds = []
        for shard in todo:
            shard_start = time.perf_counter()
            samples = generate_shard(pipe, cfg, captions, shard, encoder, size, lora_scope)
            shard_seconds.append(time.perf_counter() - shard_start)
            while len(pending) >= MAX_PENDING_WRITES:
                pending.popleft().result()
            pending.append(pool.submit(write_shard, cfg.out / shard_name(shard), samples))
            images += len(samples)
        while pending:
            pending.popleft().result()
    return images, time.perf_counter() - start, shard_seconds
