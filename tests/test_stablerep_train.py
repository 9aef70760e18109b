"""StableRep trainer and probe: schedule, sampling, exact resume, every method on tiny data,
probes on features with a known answer, the CLI."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from equigen.data.captioned import write_records
from equigen.methods.stablerep.data import CaptionGroups, GroupSampler, load_groups
from equigen.methods.stablerep.probe import ProbeConfig, probe_label
from equigen.methods.stablerep.train import StableRepConfig, load_encoder, lr_at, train_stablerep

TINY = {"image_size": 16, "patch_size": 8, "head": [16, 8],
        "backbone_args": {"depth": 1, "embed_dim": 16, "num_heads": 2}}


def test_learning_rate_warms_up_then_follows_a_cosine():
    cfg = StableRepConfig(data="x", lr=1.0, steps=10, warmup_steps=2)
    assert [lr_at(s, cfg) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, cfg) == pytest.approx(1.0)
    assert lr_at(6, cfg) == pytest.approx(0.5)  # half way through the cosine
    assert lr_at(10, cfg) == pytest.approx(0.0)


def test_sampler_covers_every_caption_once_per_epoch():
    groups = CaptionGroups([f"c{i}" for i in range(6)], [np.zeros((3, 2, 2, 3), np.uint8)] * 6)
    sampler = GroupSampler(groups, n=2, m=2, generator=torch.Generator().manual_seed(0))
    epoch = [sampler.next_batch() for _ in range(3)]
    captions = [c for batch in epoch for c, _ in batch]
    assert sorted(captions) == list(range(6))
    assert all(len(set(picks)) == 2 and max(picks) < 3 for batch in epoch for _, picks in batch)


def random_images(rng, n, size=16):
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """A captioned dataset: 12 images, labels and a train/test split."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    records = []
    for i, image in enumerate(random_images(rng, 12)):
        (root / "images").mkdir(exist_ok=True)
        image.save(root / "images" / f"{i}.png")
        records.append({"file_name": f"images/{i}.png", "text": f"caption {i}",
                        "region": "A" if i % 2 else "B", "tone": str(i % 3),
                        "split": "test" if i >= 8 else "train"})
    write_records(root, records)
    return root


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory):
    """Two shards in the synth layout: 6 captions x 3 images."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    for shard in range(2):
        with tarfile.open(root / f"shard-{shard:06d}.tar", "w") as tar:
            for c in range(shard * 3, shard * 3 + 3):
                for i, image in enumerate(random_images(rng, 3)):
                    key = f"c{c:06d}_i{i:02d}"
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    meta = json.dumps({"caption": f"caption {c}", "caption_id": c,
                                       "image_index": i}).encode()
                    for suffix, payload in (("png", buffer.getvalue()), ("json", meta)):
                        info = tarfile.TarInfo(f"{key}.{suffix}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
    return root


def test_shards_load_as_caption_groups(synthetic_shards):
    groups = load_groups(synthetic_shards, size=16)
    assert groups.captions == [f"caption {c}" for c in range(6)]
    assert [g.shape for g in groups.images] == [(3, 16, 16, 3)] * 6


def config(data, out, **overrides):
    values = dict(data=data, out=out, arch=TINY, captions_per_batch=3, images_per_caption=2,
                  steps=4, warmup_steps=1, checkpoint_every=2, min_crop_scale=0.5)
    values.update(overrides)
    return StableRepConfig.model_validate(values)


def weights(run):
    return {k: v.clone() for k, v in load_encoder(run).state_dict().items()}


@pytest.mark.parametrize("method,data", [("stablerep", "synthetic_shards"),
                                         ("stablerep_plus", "synthetic_shards"),
                                         ("simclr", "real_data"), ("clip", "real_data")])
def test_every_method_trains_and_a_stopped_run_resumes_exactly(method, data, request, tmp_path):
    folder = request.getfixturevalue(data)
    straight = train_stablerep(config(folder, tmp_path / "a", method=method))
    assert straight["steps"] == 4
    log = (tmp_path / "a" / "loss.csv").read_text().splitlines()
    assert len(log) == 5 and all(np.isfinite(float(r.split(",")[1])) for r in log[1:])

    train_stablerep(config(folder, tmp_path / "b", method=method, steps=2))  # "stopped" at step 2
    at_step_2 = weights(tmp_path / "b")
    resumed = train_stablerep(config(folder, tmp_path / "b", method=method))
    assert resumed["resumed_from"] == 2
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(at_step_2[k], b[k]) for k in b)  # steps 3-4 did train


def test_stablerep_refuses_real_data_with_one_image_per_caption(real_data, tmp_path):
    with pytest.raises(ValueError, match=">= 2 images per caption"):
        train_stablerep(config(real_data, tmp_path / "x", method="stablerep"))


def test_probe_on_features_with_a_known_answer():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 3, n)
    features = torch.tensor(rng.normal(size=(n, 5)), dtype=torch.float32)
    features[:, 0] += torch.tensor(labels * 4.0)  # the label is linear in feature 0
    rows = [{"split": "test" if i >= 150 else "train", "shape": f"s{labels[i]}",
             "noise": f"n{rng.integers(0, 3)}", "tone": str(i % 2)} for i in range(n)]
    cfg = ProbeConfig(run="unused", lrs=[0.3, 0.1], epochs=100)
    separable = probe_label(features, rows, "shape", cfg)
    assert separable["test_accuracy"] >= 0.94
    assert set(separable["by_tone"]) == {"0", "1"} and separable["group_gap"] <= 0.1
    random = probe_label(features, rows, "noise", cfg)
    assert random["test_accuracy"] < 0.6  # chance is 1/3: the probe does not invent signal
    assert separable["n_train"] == 150 and separable["n_test"] == 50


def test_train_and_probe_commands(real_data, tmp_path, capsys):
    from equigen.cli import main

    out = tmp_path / "run"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(json.dumps({"arch": TINY, "captions_per_batch": 4, "warmup_steps": 1}))
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "stablerep", "train", "--method", "simclr", "--data", str(real_data),
              "--out", str(out), "--steps", "2", "--config", str(cfg_file)])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "stablerep", "probe", str(out), "--data", str(real_data),
              "--set", "labels=[region]", "--set", "epochs=5"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "region: top-1" in printed and "gap across tone" in printed
    assert json.loads((out / "probe.json").read_text())["region"]["n_test"] == 4
    assert len(list(out.glob("features-*.safetensors"))) == 1  # cached once
