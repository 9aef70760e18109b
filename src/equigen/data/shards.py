"""WebDataset tar shards: write them deterministically and atomically, list them, read them.

A shard is a plain (uncompressed) tar holding, per sample, ``KEY.png`` (the image), ``KEY.json``
(its metadata) and ``KEY.txt`` (its caption), members in sample order and then in that extension
order, every member with mtime 0, uid/gid 0 and mode 0644 — so the same samples always give a
byte-identical tar, whichever process or run wrote it. A shard is written to ``NAME.tar.tmp`` in
the same folder and renamed when complete: a shard under its final name is always whole, and
:func:`list_shards` sees only those.

Any WebDataset reader reads them; :func:`open_shards` is the one used here (``webdataset``
package), :func:`read_shard` a dependency-free reader of one shard.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from equigen.errors import EquigenError

if TYPE_CHECKING:
    import webdataset
    from PIL import Image

SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".tar"
TMP_SUFFIX = ".tmp"
SHARD_RE = re.compile(rf"^{SHARD_PREFIX}(\d{{6,}}){re.escape(SHARD_SUFFIX)}$")
EXTENSIONS = ("png", "json", "txt")  # member order within a sample
PNG_COMPRESS_LEVEL = 6


def shard_name(index: int) -> str:
    """``shard-000012.tar`` for shard 12."""
    return f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"


def shard_index(path: str | os.PathLike[str]) -> int:
    match = SHARD_RE.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a shard ({shard_name(0)})")
    return int(match.group(1))


def sample_key(caption_index: int, image_index: int) -> str:
    """``c000123_i04``: caption 123, image 4. No dots (WebDataset splits a member name at the
    first dot of its base name)."""
    return f"c{caption_index:06d}_i{image_index:02d}"


@dataclass
class Sample:
    """One image and what it is: written as KEY.png, KEY.json (``meta``) and KEY.txt (caption)."""

    key: str
    image: "Image.Image | bytes"  # a PIL image, or PNG bytes already encoded
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)


def encode_png(image: "Image.Image | bytes") -> bytes:
    """PNG bytes (deterministic: same pixels, same bytes)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def sample_members(sample: Sample) -> list[tuple[str, bytes]]:
    """The (member name, bytes) a sample is stored as, in order."""
    if "." in sample.key or "/" in sample.key or not sample.key:
        raise ValueError(f"sample key {sample.key!r} must be non-empty, without '.' or '/'")
    meta = json.dumps(sample.meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return [
        (f"{sample.key}.png", encode_png(sample.image)),
        (f"{sample.key}.json", meta),
        (f"{sample.key}.txt", sample.caption.encode("utf-8")),
    ]


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def tmp_path_for(path: str | os.PathLike[str]) -> Path:
    """Where a shard is written before it is complete: ``NAME.tar.tmp`` beside it."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def write_shard(path: str | os.PathLike[str], samples: Sequence[Sample]) -> Path:
    """Write ``samples`` (in their order) as the shard ``path``; return ``path``.

    Written to ``NAME.tar.tmp`` (a stale one from a stopped run is overwritten) and renamed only
    once complete and flushed to disk, so ``path`` either does not exist or holds every sample.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{final}: duplicate sample keys")
    tmp = tmp_path_for(final)  # a stop here leaves only the .tmp, overwritten by the next attempt
    with open(tmp, "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for name, data in sample_members(sample):
                    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


def list_shards(folder: str | os.PathLike[str]) -> list[Path]:
    """Complete shards in ``folder`` (``shard-NNNNNN.tar``, never ``.tmp``), in shard order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if SHARD_RE.match(p.name) and p.is_file()]
    return sorted(found, key=shard_index)


def _shard_paths(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            shards = list_shards(path)
            if not shards:
                raise EquigenError(f"{path}: no shards ({shard_name(0)}, ...) in this folder")
            return shards
        paths = [path]
    else:
        paths = [Path(p) for p in source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EquigenError(f"shard(s) not found: {', '.join(missing)}")
    if not paths:
        raise EquigenError("no shards given")
    return paths


def open_shards(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    decode: str | None = "pil",
    **webdataset_kwargs: Any,
) -> "webdataset.WebDataset":
    """A ``webdataset.WebDataset`` over a shard folder (its complete shards) or a list of shards.

    Samples come in shard order (no shard shuffling unless ``shardshuffle`` is passed) as dicts
    ``{"__key__", "png", "json", "txt", ...}``; ``decode="pil"`` gives PIL images, parsed JSON
    and str, ``decode=None`` raw bytes. Extra keyword arguments go to ``WebDataset`` (e.g.
    ``nodesplitter=webdataset.split_by_node`` under torch.distributed).
    """
    import webdataset

    urls = [str(p) for p in _shard_paths(source)]
    webdataset_kwargs.setdefault("shardshuffle", False)
    dataset = webdataset.WebDataset(urls, **webdataset_kwargs)
    return dataset.decode(decode) if decode else dataset


def read_shard(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The samples of one shard, without webdataset: ``{"__key__": KEY, "png": bytes,
    "json": dict, "txt": str}`` in stored order."""
    current: dict[str, Any] | None = None
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            if ext == "json":
                current[ext] = json.loads(data)
            elif ext == "txt":
                current[ext] = data.decode("utf-8")
            else:
                current[ext] = data
    if current is not None:
        yield current
