"""The mini-world: renderer purity, caption honesty, declared skews, dataset export."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from equigen.data.captioned import load_records
from equigen.errors import EquigenError
from equigen.world import (
    STYLES,
    Scene,
    caption,
    declared,
    export_distribution,
    generic_caption,
    load_world,
    render,
    sample_rows,
    sample_scenes,
)
from equigen.world.scene import WORLD_YAML

WORLD = load_world()
SCENE = Scene(tone=2, region="Avel", occupation="doctor", setting="market", style="authentic")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- render


def test_render_is_deterministic() -> None:
    a, b = render(SCENE, seed=7), render(SCENE, seed=7)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert _png(a) == _png(b)


def test_render_varies_with_seed_and_scene() -> None:
    images = [np.asarray(render(SCENE, seed=s), dtype=np.int16) for s in range(6)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 2.0
    other = Scene(tone=2, region="Avel", occupation="doctor", setting="market", style="stereotyped")
    assert render(other, seed=0).tobytes() != render(SCENE, seed=0).tobytes()


def test_render_does_not_touch_global_rng() -> None:
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    render(SCENE, seed=3)
    assert np.random.random() == expected


@pytest.mark.parametrize("size", [32, 96])
def test_render_other_sizes(size: int) -> None:
    assert render(SCENE, seed=1, size=size).size == (size, size)


def test_tone_is_visible_in_pixels() -> None:
    """The mean brightness of skin-coloured pixels orders the four tones (a cheap oracle)."""
    means = []
    for tone in range(len(WORLD.tones)):
        target = np.asarray(WORLD.tones[tone].rgb, dtype=float)
        pixels = np.asarray(render(Scene(tone, "Kethu", "farmer", "home", "authentic"), seed=4),
                            dtype=float).reshape(-1, 3)
        near = np.linalg.norm(pixels - target, axis=1) < 25
        assert near.sum() > 60, f"tone {tone}: too few skin pixels"
        means.append(pixels[near].mean())
    assert means == sorted(means, reverse=True)


def test_render_rejects_unknown_values() -> None:
    with pytest.raises(EquigenError, match="region 'Atlantis'"):
        render(Scene(0, "Atlantis", "doctor", "home", "authentic"), seed=0)
    with pytest.raises(EquigenError, match="tone 9"):
        render(Scene(9, "Avel", "doctor", "home", "authentic"), seed=0)


# ----------------------------------------------------------------------------------- captions


def _region_words() -> dict[str, list[str]]:
    return {name: spec.words(name) for name, spec in WORLD.regions.items()}


def _named_tone(text: str) -> int | None:
    """The tone a caption names ("dark-skinned", "with dark skin"); the longest match wins."""
    found = [i for i, t in enumerate(WORLD.tones)
             if re.search(rf"\b{t.name}(-skinned| skin)\b", text)]
    return max(found, key=lambda i: len(WORLD.tones[i].name)) if found else None


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


@pytest.mark.parametrize("name", ["web", "curated"])
def test_captions_name_exactly_what_they_say(name: str) -> None:
    words = _region_words()
    for row in sample_rows(name, 600, seed=3):
        text, named = row["text"], set(row["named"])
        assert _named_tone(text) == (row["tone"] if "tone" in named else None), text
        if "tone" not in named:
            assert "skin" not in text
        for region, region_words in words.items():
            said = any(_mentions(text, w) for w in region_words)
            assert said == (region == row["region"] and "region" in named), text
        for occupation in WORLD.occupations:
            said = _mentions(text, occupation)
            assert said == (occupation == row["occupation"] and "occupation" in named), text


def test_generic_text_names_no_region_or_tone() -> None:
    all_words = [w for ws in _region_words().values() for w in ws]
    for row in sample_rows("curated", 300, seed=1):
        generic = row["generic_text"]
        assert not any(_mentions(generic, w) for w in all_words), generic
        assert _named_tone(generic) is None and "skin" not in generic


def test_captions_are_deterministic() -> None:
    assert caption(SCENE, 11) == caption(SCENE, 11)
    assert generic_caption(SCENE, 11) == generic_caption(SCENE, 11)
    assert len({caption(SCENE, s).text for s in range(40)}) > 10


def test_always_name_adds_the_attribute_and_keeps_the_other_naming_choices() -> None:
    for seed in range(60):
        plain = caption(SCENE, seed)
        recaption = caption(SCENE, seed, always_name=("tone",))
        assert recaption.named["tone"] == SCENE.tone
        assert _named_tone(recaption.text) == SCENE.tone, recaption.text
        assert {k: v for k, v in recaption.named.items() if k != "tone"} == {
            k: v for k, v in plain.named.items() if k != "tone"}, (plain, recaption)
        if "tone" in plain.named:
            assert recaption == plain
    with pytest.raises(EquigenError, match="always_name.*skin.*valid: occupation, tone"):
        caption(SCENE, 0, always_name=("skin",))


def test_caption_naming_rates_match_rules() -> None:
    rows = sample_rows("web", 3000, seed=5)
    probs = WORLD.captions[WORLD.distributions["web"].captions].name_probability
    for attr in ("tone", "region", "occupation", "setting"):
        rate = np.mean([attr in r["named"] for r in rows])
        p = getattr(probs, attr)
        assert abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / len(rows)) + 1e-9, (attr, rate, p)


# ------------------------------------------------------------------------------ distributions


def _within(count: int, total: int, p: float, label: str) -> None:
    """Binomial check at 4 sigma (exact for p in {0, 1}).

    4 rather than 3 sigma because the tests below make ~200 such checks: at 3 sigma one of them
    would exceed its bound by chance about a third of the time (a Bonferroni-style correction).
    """
    rate = count / total
    bound = 4 * np.sqrt(p * (1 - p) / total) + 1e-12
    assert abs(rate - p) <= bound, f"{label}: sampled {rate:.4f}, declared {p:.4f} (n={total})"


@pytest.mark.parametrize("name", ["web", "balanced", "probe", "curated"])
def test_sampled_skew_matches_declared(name: str) -> None:
    decl = declared(name)
    n = 700 if name == "curated" else 5000
    scenes = sample_scenes(name, n, seed=2)
    assert len(scenes) == n
    if decl.per_region is None:
        counts = Counter(s.region for s in scenes)
        for i, region in enumerate(decl.regions):
            _within(counts[region], n, decl.region[i], f"{name} P(region={region})")
    else:
        assert set(Counter(s.region for s in scenes).values()) == {n // len(decl.regions)}
    for attr, names, probs in (("occupation", decl.occupations, decl.occupation),
                               ("setting", decl.settings, decl.setting)):
        counts = Counter(getattr(s, attr) for s in scenes)
        for i, value in enumerate(names):
            _within(counts[value], n, probs[i], f"{name} P({attr}={value})")
    for o, occupation in enumerate(decl.occupations):
        tones = Counter(s.tone for s in scenes if s.occupation == occupation)
        total = sum(tones.values())
        for t in range(len(WORLD.tones)):
            _within(tones[t], total, decl.tone_given_occupation[o, t],
                    f"{name} P(tone={t} | {occupation})")
    for r, region in enumerate(decl.regions):
        styles = [s.style for s in scenes if s.region == region]
        _within(styles.count("stereotyped"), len(styles), decl.stereotyped_given_region[r],
                f"{name} P(stereotyped | {region})")


def test_web_declares_the_intended_bias() -> None:
    """Guards world.yaml edits: every occupation skewed to a tone, two rare stereotyped regions."""
    decl = declared("web")
    assert (decl.tone_given_occupation.max(axis=1) >= 0.5).all()
    rare = decl.region <= 0.05
    assert rare.sum() == 2
    assert (decl.stereotyped_given_region[rare] >= 0.8).all()
    assert (decl.stereotyped_given_region[~rare] <= 0.2).all()


def test_curated_is_authentic_with_insider_captions() -> None:
    rows = sample_rows("curated")
    assert len(rows) == 140 * len(WORLD.regions)
    assert {r["style"] for r in rows} == {"authentic"}
    assert all("region" in r["named"] for r in rows)


def test_probe_has_a_split_and_rows_are_reproducible() -> None:
    rows = sample_rows("probe", 500, seed=9)
    assert Counter(r["split"] for r in rows) == {"train": 400, "test": 100}
    assert rows == sample_rows("probe", 500, seed=9)
    assert rows != sample_rows("probe", 500, seed=10)
    assert {r["style"] for r in rows} == set(STYLES)
    assert all("split" not in r for r in sample_rows("web", 5))


# ------------------------------------------------------------------------------- world loader


def _broken_world(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(WORLD_YAML.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["regions"]["Avel"].pop("demonym"), "regions.Avel.demonym"),
        (lambda d: d.__setitem__("tone_jitter", "lots"), "tone_jitter"),
        (lambda d: d["occupations"]["chef"].__setitem__("prop", "spoon"), "occupations.chef.prop"),
        (lambda d: d["regions"]["Avel"].__setitem__("colour", [1, 2, 3]), "regions.Avel.colour"),
        (lambda d: d["distributions"]["web"]["region"].__setitem__("Atlantis", 0.1),
         "distributions.web.region"),
        (lambda d: d["distributions"]["web"]["tone_by_occupation"].pop("chef"),
         "distributions.web.tone_by_occupation"),
        (lambda d: d["distributions"]["balanced"].__setitem__("captions", "poetic"),
         "distributions.balanced.captions"),
    ],
)
def test_world_errors_name_the_key(tmp_path: Path, edit, key: str) -> None:
    with pytest.raises(EquigenError, match=re.escape(key)):
        load_world(_broken_world(tmp_path, edit))


# ------------------------------------------------------------------------------------- export


def test_export_writes_a_dataset_and_resumes(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "probe"
    progress: list[int] = []
    export_distribution("probe", out, n=10, seed=1, size=32, on_progress=progress.append)
    assert progress == list(range(1, 11))
    records = load_records(out)
    assert len(records) == 10
    for record in records:
        image = out / record.file_name
        assert image.is_file()
        assert record.attributes["split"] in ("train", "test")
    assert not list(out.rglob("*.tmp"))
    first = (out / records[0].file_name).read_bytes()

    # A second run renders nothing, except an image that went missing.
    (out / records[3].file_name).unlink()
    import equigen.world.export as export_module

    rendered: list[int] = []
    real_render = export_module.render

    def counting_render(scene, seed, size):
        rendered.append(seed)
        return real_render(scene, seed, size)

    monkeypatch.setattr(export_module, "render", counting_render)
    export_distribution("probe", out, n=10, seed=1, size=32)
    assert rendered == [records[3].attributes["seed"]]
    assert (out / records[0].file_name).read_bytes() == first
    assert len(load_records(out)) == 10


def test_export_refuses_a_folder_made_differently(tmp_path: Path) -> None:
    export_distribution("balanced", tmp_path, n=3, seed=0, size=32)
    with pytest.raises(EquigenError, match="export"):
        export_distribution("balanced", tmp_path, n=3, seed=1, size=32)
