"""equigen synth: WebDataset shards, deterministic per image, split across processes, resumable."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from equigen.data import shards as shards_mod
from equigen.data.shards import Sample, list_shards, open_shards, read_shard, write_shard
from equigen.data.synth import SynthConfig, load_captions, resolve_rank, run_synth
from equigen.errors import EquigenError

CAPTIONS = ["a photo of a doctor", "a photo of a chef", "a street at night", "a market",
            "a photo of a farmer"]
# 5 captions x m=2, 2 captions per shard -> shards of 4, 4 and 2 images; batches of 3 images
# cross caption boundaries inside a shard
SETTINGS = ["--m", "2", "--set", "steps=2", "--set", "size=32", "--set", "captions_per_shard=2",
            "--set", "batch_size=3"]


def write_captions(folder, name="captions.txt", text=None):
    path = folder / name
    path.write_text("\n".join(CAPTIONS) + "\n" if text is None else text)
    return path


def synth_config(tiny_model, captions, out, **overrides):
    values = dict(captions=captions, model=str(tiny_model), out=out, m=2, steps=2, size=32,
                  captions_per_shard=2, batch_size=3)
    values.update(overrides)
    return SynthConfig(**values)


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in list_shards(folder)}


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """One uninterrupted single-process run (the yardstick of the other tests)."""
    folder = tmp_path_factory.mktemp("synth-ref")
    captions = write_captions(folder)
    summary = run_synth(synth_config(tiny_model, captions, folder / "out"), rank=0, world_size=1)
    return folder, captions, summary


def test_shards_hold_every_sample_with_its_metadata(reference, tiny_model):
    folder, _, summary = reference
    out = folder / "out"
    assert summary["images"] == 10 and summary["images_per_s"] > 0
    assert [p.name for p in list_shards(out)] == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples = list(open_shards(out))  # the webdataset package reads our shards
    assert [s["__key__"] for s in samples] == [f"c{c:06d}_i{i:02d}" for c in range(5)
                                               for i in range(2)]
    for sample in samples:
        meta = sample["json"]
        c = meta["caption_index"]
        assert sample["__key__"] == f"c{c:06d}_i{meta['image_index']:02d}"
        assert sample["txt"] == meta["caption"] == CAPTIONS[c]
        assert meta["caption_id"] == str(c)
        assert isinstance(sample["png"], Image.Image) and sample["png"].size == (32, 32)
        assert meta == {**meta, "model": str(tiny_model), "guidance_scale": 2.0, "steps": 2,
                        "size": 32, "fairmap": None, "lora": None}
    assert len({s["json"]["seed"] for s in samples}) == 10
    # images of one caption differ from each other
    first = [np.asarray(s["png"]) for s in samples[:2]]
    assert not np.array_equal(*first)
    # member order and headers are fixed: same content -> same bytes
    with tarfile.open(out / "shard-000002.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"c000004_i0{i}.{e}" for i in range(2)
                                         for e in ("png", "json", "txt")]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}

    index = json.loads((out / "index.json").read_text())
    assert index["images"] == 10 and index["n_shards"] == 3
    assert [(s["name"], s["samples"], s["captions"]) for s in index["shards"]] == [
        ("shard-000000.tar", 4, [0, 1]), ("shard-000001.tar", 4, [2, 3]),
        ("shard-000002.tar", 2, [4, 4])]
    assert index["config"]["m"] == 2 and index["config"]["guidance_scale"] == 2.0
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"


def test_any_image_regenerates_alone_from_its_seed(reference, tiny_model):
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images

    pipe = load_pipeline(tiny_model)
    samples = list(read_shard(reference[0] / "out" / "shard-000001.tar"))
    assert len(samples) == 4
    for sample in samples:  # each image alone, from its recorded caption, seed and settings
        meta = sample["json"]
        alone = generate_images(pipe, [meta["caption"]], [meta["seed"]], steps=meta["steps"],
                                guidance_scale=meta["guidance_scale"], size=meta["size"],
                                batch_size=1)[0]
        stored = np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=float)
        diff = np.abs(stored - np.asarray(alone, dtype=float))
        # equal up to float rounding of batched kernels (an odd pixel value off by one)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, sample["__key__"]


def test_two_processes_make_the_same_shards_as_one(reference, tiny_model, tmp_path):
    folder, captions, _ = reference
    out = tmp_path / "two"
    command = [sys.executable, "-m", "equigen", "--quiet", "synth", str(captions),
               "--model", str(tiny_model), "--out", str(out), *SETTINGS]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"})
             for r in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr
        assert "images/s" in stdout, stdout  # the CLI prints throughput
    assert "6 images in 2 shard(s) (rank 0 of 2)" in results[0][0]  # shards 0 and 2
    assert "4 images in 1 shard(s) (rank 1 of 2)" in results[1][0]  # shard 1
    assert shard_bytes(out) == shard_bytes(folder / "out")
    assert (out / "index.json").read_bytes() == (folder / "out" / "index.json").read_bytes()
    assert not list(out.glob("*.tmp"))


def test_stopped_run_resumes_to_identical_shards(reference, tiny_model, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    folder, captions, _ = reference
    out = tmp_path / "resumed"
    original = StableDiffusionPipeline.__call__
    calls = {"n": 0, "stop_at": 4}

    def counting_call(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:  # shard 0 took calls 1-2; stop after shard 1's first
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", counting_call)
    with pytest.raises(KeyboardInterrupt):
        run_synth(synth_config(tiny_model, captions, out))
    assert [p.name for p in list_shards(out)] == ["shard-000000.tar"]
    assert sorted(p.name for p in out.glob("*.tar*")) == ["shard-000000.tar"]
    assert not (out / "index.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"

    (out / "shard-000001.tar.tmp").write_bytes(b"half a shard from a killed run")
    calls.update(n=0, stop_at=None)
    summary = run_synth(synth_config(tiny_model, captions, out))
    assert calls["n"] == 3, "shard 0 is not regenerated: shard 1 takes 2 calls, shard 2 one"
    assert summary["shards_written"] == 2 and summary["shards_skipped"] == 1
    assert shard_bytes(out) == shard_bytes(folder / "out")
    assert (out / "index.json").read_bytes() == (folder / "out" / "index.json").read_bytes()
    assert not list(out.glob("*.tmp"))

    calls["n"] = 0
    assert run_synth(synth_config(tiny_model, captions, out))["images"] == 0 and calls["n"] == 0
    with pytest.raises(EquigenError, match="other settings.*guidance_scale was 2.0, now 4.0"):
        run_synth(synth_config(tiny_model, captions, out, guidance_scale=4.0))


def test_a_shard_is_never_visible_half_written(tmp_path, monkeypatch):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    samples = [Sample(f"c{c:06d}_i00", image, f"caption {c}", {"caption_index": c})
               for c in range(3)]
    path = write_shard(tmp_path / "a" / "shard-000000.tar", samples)
    again = write_shard(tmp_path / "b" / "shard-000000.tar", samples)
    assert again.read_bytes() == path.read_bytes()
    assert [s["txt"] for s in read_shard(path)] == ["caption 0", "caption 1", "caption 2"]

    original = tarfile.TarFile.addfile
    added = {"n": 0}

    def fail_midway(self, *args, **kwargs):
        added["n"] += 1
        if added["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "addfile", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "c" / "shard-000000.tar", samples)
    assert list_shards(tmp_path / "c") == []
    assert (tmp_path / "c" / "shard-000000.tar.tmp").is_file()
    with pytest.raises(ValueError, match="without '.'"):
        shards_mod.sample_members(Sample("a.b", image, "x"))


def test_caption_formats(tmp_path):
    txt = load_captions(write_captions(tmp_path, "c.txt", "a cat\n\n  a dog  \n"))
    assert [(c.index, c.id, c.text, c.line) for c in txt] == [
        (0, "0", "a cat", 1), (1, "1", "a dog", 3)]
    jsonl = load_captions(write_captions(tmp_path, "c.jsonl",
                                         '{"caption": "a cat", "id": "x7"}\n\n{"text": "a dog"}\n'))
    assert [(c.id, c.text, c.line) for c in jsonl] == [("x7", "a cat", 1), ("1", "a dog", 3)]
    csv_ = load_captions(write_captions(tmp_path, "c.csv",
                                        'id,text\n9,"a cat, sitting"\n,a dog\n'))
    assert [(c.id, c.text) for c in csv_] == [("9", "a cat, sitting"), ("1", "a dog")]


@pytest.mark.parametrize("name, text, message", [
    ("empty.txt", "\n \n",
     r"empty.txt: no captions in this file \(expected one caption per line\)"),
    ("c.jsonl", '{"caption": "a"}\n{"label": 3}\n',
     r"c.jsonl, line 2: no 'caption' or 'text' field \(fields here: 'label'\)"),
    ("c.jsonl", '{"caption": "a"}\n{"caption": "b",\n', r"c.jsonl, line 2: not valid JSON"),
    ("c.jsonl", '{"caption": ""}\n', r"line 1: field 'caption' must be a non-empty string"),
    ("c.jsonl", '{"caption": "a", "id": 1}\n{"caption": "b", "id": "1"}\n',
     r"line 2: id '1' is already used on line 1; ids must be unique"),
    ("c.csv", "id,label\n1,cat\n",
     r"c.csv, line 1: no 'caption' or 'text' column \(columns: 'id', 'label'\)"),
    ("c.csv", "caption,id\na cat,5\na dog,5\n",
     r"c.csv, line 3: id '5' is already used on line 2"),
    ("c.tsv", "a cat\n", r"unknown captions format '.tsv'; expected one of .txt, .jsonl, .csv"),
])
def test_bad_captions_files_say_what_is_wrong(tmp_path, name, text, message):
    with pytest.raises(EquigenError, match=message):
        load_captions(write_captions(tmp_path, name, text))


def test_rank_comes_from_arguments_then_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (3, 4) and resolve_rank(1, 2) == (1, 2)
    with pytest.raises(EquigenError, match="rank 4 of world size 4"):
        resolve_rank(rank=4)


def save_tiny_lora(tiny_model, folder):
    """A LoRA on the tiny UNet that changes its images, saved in diffusers format."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from equigen.models import load_pipeline

    unet = load_pipeline(tiny_model).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (no effect): make the LoRA do something
                param.normal_(0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return folder


def test_lora_and_fairmap_change_the_images(reference, tiny_model, tmp_path):
    import torch

    from equigen.methods.fairmap.mapping import FairMap, FairMapping

    save_tiny_lora(tiny_model, tmp_path / "lora")
    # a Fair Mapping that shifts every prompt embedding
    fairmap = FairMap(32)
    with torch.no_grad():
        fairmap.linear.bias.fill_(1.0)
    FairMapping(fairmap, {"tone": ["dark-skinned"]}).save(tmp_path / "fairmap")

    # caption 0, image 0 of the reference run has the same caption and seed
    base = next(read_shard(reference[0] / "out" / "shard-000000.tar"))
    captions = write_captions(tmp_path, text=CAPTIONS[0] + "\n")
    for name, extra in (("lora", {"lora": tmp_path / "lora"}),
                        ("fairmap", {"fairmap": tmp_path / "fairmap"})):
        run_synth(synth_config(tiny_model, captions, tmp_path / f"out-{name}", m=1, **extra))
        sample = next(read_shard(tmp_path / f"out-{name}" / "shard-000000.tar"))
        assert sample["json"]["seed"] == base["json"]["seed"]
        assert sample["json"][name] == (tmp_path / name).as_posix()
        diff = np.abs(np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=float)
                      - np.asarray(Image.open(io.BytesIO(base["png"])), dtype=float))
        assert diff.mean() > 2, f"{name} had no effect on the image"
    with pytest.raises(EquigenError, match="LoRA .*missing: not found"):
        run_synth(synth_config(tiny_model, captions, tmp_path / "x", m=1,
                               lora=tmp_path / "missing"))


def test_a_scoped_lora_is_applied_only_to_the_captions_naming_its_words(reference, tiny_model,
                                                                        tmp_path):
    from equigen.models.loading import write_lora_scope

    lora = save_tiny_lora(tiny_model, tmp_path / "lora")
    write_lora_scope(lora, ["chef"])
    captions = write_captions(tmp_path, text="\n".join(CAPTIONS[:2]) + "\n")
    run_synth(synth_config(tiny_model, captions, tmp_path / "out", m=1, lora=lora))
    doctor, chef = read_shard(tmp_path / "out" / "shard-000000.tar")
    assert doctor["json"]["lora"] is None and chef["json"]["lora"] == lora.as_posix()
    reference_doctor, _, reference_chef, _ = read_shard(reference[0] / "out" / "shard-000000.tar")
    pixels = lambda s: np.asarray(Image.open(io.BytesIO(s["png"])), dtype=float)  # noqa: E731
    assert np.abs(pixels(doctor) - pixels(reference_doctor)).max() <= 1  # the base model's
    assert np.abs(pixels(chef) - pixels(reference_chef)).mean() > 2
    with pytest.raises(EquigenError, match="--lora-everywhere"):
        run_synth(synth_config(tiny_model, captions, tmp_path / "x", m=1, lora=lora, compile=True))


def test_compiled_unet_draws_the_same_images(reference, tiny_model, tmp_path):
    from torch._dynamo.utils import counters

    captions = write_captions(tmp_path, text=CAPTIONS[0] + "\n")
    counters.clear()
    summary = run_synth(synth_config(tiny_model, captions, tmp_path / "out", batch_size=2,
                                     compile=True), rank=0, world_size=1)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the UNet
    assert len(summary["shard_seconds"]) == summary["shards_written"] == 1
    compiled = list(read_shard(tmp_path / "out" / "shard-000000.tar"))
    stored = list(read_shard(reference[0] / "out" / "shard-000000.tar"))[:2]
    for a, b in zip(compiled, stored, strict=True):
        assert a["json"]["seed"] == b["json"]["seed"]
        diff = np.abs(np.asarray(Image.open(io.BytesIO(a["png"])), dtype=float)
                      - np.asarray(Image.open(io.BytesIO(b["png"])), dtype=float))
        # inductor fuses and reorders float operations: equal up to rounding
        assert diff.max() <= 2 and (diff > 0).mean() < 0.02, a["__key__"]
