"""SCoFT negatives: k seeded base-model images per curated caption, listed in the metadata."""

import json

import numpy as np
import pytest
from PIL import Image

from equigen.data.captioned import load_records, write_records
from equigen.data.check import check_dataset
from equigen.errors import EquigenError
from equigen.methods.scoft import NegativesConfig, make_negatives
from equigen.models import load_pipeline
from equigen.models.generate import generate_images, image_seed


@pytest.fixture
def curated(tmp_path):
    root = tmp_path / "curated"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, caption in enumerate(["a doctor from Avel", "an Avel street", "a chef from Kethu"]):
        Image.new("RGB", (64, 64), (40 * i, 90, 120)).save(root / "images" / f"{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": caption, "culture": "Avel"})
    write_records(root, rows)
    return root


def test_negatives_are_generated_listed_and_resumed(curated, tiny_model, monkeypatch):
    cfg = NegativesConfig(dataset=curated, model=str(tiny_model), k=2, steps=2, batch_size=4)
    assert make_negatives(cfg) == 6
    records = load_records(curated)
    assert [r.negatives for r in records][1] == ["negatives/00001_0.png", "negatives/00001_1.png"]
    assert records[0].culture == "Avel"  # the other columns are kept
    assert check_dataset(curated).ok  # every listed negative exists and decodes

    # image j of row r regenerates alone from its seed
    pipe = load_pipeline(str(tiny_model))
    again = generate_images(pipe, [records[2].text], [image_seed(0, 2, 1)], steps=2)[0]
    stored = Image.open(curated / "negatives" / "00002_1.png")
    assert np.abs(np.asarray(again, int) - np.asarray(stored, int)).max() <= 2

    (curated / "negatives" / "00000_1.png").unlink()  # as if stopped before this one
    loads = []
    monkeypatch.setattr("equigen.models.load_pipeline",
                        lambda *a, **k: loads.append(a) or load_pipeline(*a, **k))
    assert make_negatives(cfg) == 1
    assert len(loads) == 1
    assert make_negatives(cfg) == 0 and len(loads) == 1  # nothing to do: the model is not loaded


def test_other_settings_are_refused(curated, tiny_model):
    make_negatives(NegativesConfig(dataset=curated, model=str(tiny_model), k=1, steps=2))
    with pytest.raises(EquigenError, match="guidance_scale was 4.0, now 7.5"):
        make_negatives(NegativesConfig(dataset=curated, model=str(tiny_model), k=1, steps=2,
                                       guidance_scale=7.5))
    assert json.loads((curated / "negatives" / "settings.json").read_text())["k"] == 1
