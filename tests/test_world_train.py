"""The base-model trainer on a tiny config: end to end, loadable, and exactly resumable."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from equigen.config import load_config
from equigen.models import load_pipeline
from equigen.world import train_base as tb

TINY = {
    "checkpoint_every": 2,
    "log_every": 1,
    "threads": 1,
    "data": {"n_images": 48, "workers": 1},
    "vae": {"steps": 2, "batch_size": 4, "arch": {"block_out_channels": [32, 32]}},
    "unet": {"steps": 4, "batch_size": 4, "warmup_steps": 1,
             "arch": {"block_out_channels": [32, 32], "cross_attention_levels": [True, False]}},
}


def tiny_config(out):
    return load_config(tb.BaseTrainConfig, None, values={"out": str(out), **{
        k: v for k, v in TINY.items()}})


def _stop_after_checkpoint(monkeypatch, cfg, stage: str, step: int) -> None:
    """Run ``train_base(cfg)`` as if stopped (Ctrl-C) right after ``stage`` saved ``step``."""
    original_save = tb.save_checkpoint

    def save_then_stop(run_dir, saved_step, *args, **kwargs):
        original_save(run_dir, saved_step, *args, **kwargs)
        if run_dir.name == stage and saved_step == step:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(tb, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            tb.train_base(cfg)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base-a")
    pipeline = tb.train_base(tiny_config(out))
    return out, pipeline


def test_tiny_run_writes_a_loadable_pipeline_with_logs(finished_run):
    out, pipeline = finished_run
    assert (pipeline / "model_index.json").is_file()
    assert not (pipeline / "text_encoder").exists(), "the 90 MB text encoder is not shipped"
    lines = (out / "unet" / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr,seconds" and len(lines) == 1 + 4
    pipe = load_pipeline(pipeline)
    assert type(pipe.text_encoder).__name__ == "BertModel"
    assert pipe.tokenizer.model_max_length == 32 and pipe.text_encoder.config.use_attention_mask
    image = pipe("a photo of a doctor", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    assert pipe.unet.dtype == torch.float32  # shipped in fp16, loaded as fp32 on CPU


def test_stopped_run_resumes_to_the_same_state(finished_run, tmp_path, monkeypatch):
    reference, _ = finished_run
    out = tmp_path / "base-b"
    out.mkdir()
    for done_stage in ("data", "vae"):  # reuse the finished render and VAE; retrain the UNet
        shutil.copytree(reference / done_stage, out / done_stage)
    _stop_after_checkpoint(monkeypatch, tiny_config(out), stage="unet", step=2)
    assert not (out / "unet" / "final-ema").exists()
    tb.train_base(tiny_config(out))

    for name in ("unet", "ema"):
        a = load_file(reference / "unet" / "checkpoint" / f"{name}.safetensors")
        b = load_file(out / "unet" / "checkpoint" / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log_a = [r.split(",")[:2] for r in (reference / "unet" / "loss.csv").read_text().splitlines()]
    log_b = [r.split(",")[:2] for r in (out / "unet" / "loss.csv").read_text().splitlines()]
    assert log_a == log_b


def test_export_from_a_run_still_training(finished_run, tmp_path):
    reference, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "unet" / "final-ema")  # as if the UNet were still training
    record = tb.export_pipeline(run, tmp_path / "exported")
    assert record["unet"]["steps"] == 4 and record["unet"]["of_planned"] == 4
    assert record["unet"]["train_seconds"] > 0
    assert record["config"]["unet"]["steps"] == 4
    exported = load_pipeline(tmp_path / "exported")
    ema = load_file(reference / "unet" / "checkpoint" / "ema.safetensors")
    for key, value in exported.unet.state_dict().items():
        assert torch.allclose(value, ema[key].float(), atol=1e-2), key  # fp16 round trip


def test_demo_runs_every_stage_reports_and_resumes(finished_run, tmp_path, capsys):
    import json

    from equigen.cli import main

    _, pipeline = finished_run
    out = tmp_path / "demo"
    args = ["--quiet", "demo", "--out", str(out), "--set", f"model={pipeline}",
            "--set", "images_per_grid_prompt=2", "--set", "n=2", "--set", "steps=2",
            "--set", "fairmap_steps=2", "--set", "scoft_steps=2", "--set", "curated_rows=10",
            "--set", "negatives_k=1", "--set", "synth_captions=4", "--set", "synth_m=2",
            "--set", "stablerep_steps=2", "--set", "probe_rows=60",
            "--set", "grid_prompts=[a photo of a doctor, a street in Avel]"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["grid", "audit-base", "fairmap", "scoft", "stablerep"]
    headline = manifest["results"]["headline"]
    assert [row["after"][0] for row in headline] == ["Fair Mapping", "SCoFT", "SCoFT",
                                                     "StableRep, synthetic"]
    for row in headline:  # every figure is (estimate, low, high) with low <= estimate <= high
        for _, (value, low, high) in (row["before"], row["after"]):
            assert low <= value <= high
    page = (out / "report.html").read_text()
    assert "Headline" in page and "report-scoft.html" in page
    assert (out / "report-scoft.html").is_file()
    from PIL import Image

    assert Image.open(out / "grid.png").size[1] == 2 * (128 + 2)
    assert "near-copies" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(args)  # a second run reuses every finished stage
    assert "reused" in capsys.readouterr().out


RECAPTION = {"steps": 4, "warmup_steps": 1, "probability": 0.5}


def _recaption_run(finished_run, out):
    """A copy of the finished tiny run (data, VAE, UNet) configured with the recaption stage."""
    reference, _ = finished_run
    out.mkdir()
    for done_stage in ("data", "vae", "unet"):
        shutil.copytree(reference / done_stage, out / done_stage)
    return load_config(tb.BaseTrainConfig, None, values={
        "out": str(out), **TINY, "recaption": RECAPTION})


def test_recaption_stage_continues_the_unet_and_resumes_exactly(finished_run, tmp_path, monkeypatch):
    reference_cfg = _recaption_run(finished_run, tmp_path / "a")
    pipeline = tb.train_base(reference_cfg)
    rows = [r.split(",") for r in (tmp_path / "a" / "recaption" / "loss.csv").read_text().splitlines()]
    assert len(rows) == 1 + 4
    texts = tb.recaption_texts(reference_cfg, [json.loads(line) for line in
                                               (tmp_path / "a" / "data" / "rows.jsonl").open()],
                               ["tone"])
    assert all(re.search(r"(-skinned| skin)\b", t) for t in texts), "every recaption names a tone"

    shipped = load_pipeline(pipeline).unet.state_dict()
    ema = load_file(tmp_path / "a" / "recaption" / "checkpoint" / "ema.safetensors")
    before = load_file(tmp_path / "a" / "unet" / "checkpoint" / "ema.safetensors")
    assert all(torch.allclose(shipped[k], ema[k].float(), atol=1e-2) for k in ema)
    assert any(not torch.equal(ema[k], before[k]) for k in ema), "the recaption stage trained"

    cfg = _recaption_run(finished_run, tmp_path / "b")
    _stop_after_checkpoint(monkeypatch, cfg, stage="recaption", step=2)
    tb.train_base(cfg)
    for name in ("unet", "ema"):
        a = load_file(tmp_path / "a" / "recaption" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "recaption" / "checkpoint" / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_export_names_the_recaption_stage(finished_run, tmp_path):
    cfg = _recaption_run(finished_run, tmp_path / "run")
    tb.train_base(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [r["steps"] for r in manifest["config"]["recaption"]] == [4]
    record = tb.export_pipeline(tmp_path / "run", tmp_path / "exported")
    assert record["recaption"] == [{"steps": 4, "of_planned": 4, "weights": "EMA",
                                    "train_seconds": record["recaption"][0]["train_seconds"]}]
    assert record["unet"]["steps"] == 4


def test_a_second_recaption_round_continues_the_first(finished_run, tmp_path):
    one_round = _recaption_run(finished_run, tmp_path / "run")
    tb.train_base(one_round)
    first = load_file(tmp_path / "run" / "recaption" / "checkpoint" / "ema.safetensors")
    two_rounds = load_config(tb.BaseTrainConfig, None, values={
        "out": str(tmp_path / "run"), **TINY,
        "recaption": [RECAPTION, {**RECAPTION, "steps": 2, "probability": 1.0,
                                  "timestep_bias": {"strategy": "later", "multiplier": 3.0}}]})
    pipeline = tb.train_base(two_rounds)  # round 1 is finished: only round 2 trains

    second = load_file(tmp_path / "run" / "recaption-2" / "checkpoint" / "ema.safetensors")
    assert torch.equal(load_file(tmp_path / "run" / "recaption" / "checkpoint" / "ema.safetensors")["conv_in.weight"],
                       first["conv_in.weight"]), "round 1 is left as it was"
    assert any(not torch.equal(first[k], second[k]) for k in first), "round 2 trained"
    shipped = load_pipeline(pipeline).unet.state_dict()
    assert all(torch.allclose(shipped[k], second[k].float(), atol=1e-2) for k in second)
    record = tb.export_pipeline(tmp_path / "run", tmp_path / "exported")
    assert [(r["steps"], r["of_planned"]) for r in record["recaption"]] == [(4, 4), (2, 2)]
    assert tb.step_generator(0, "recaption-2", 0).initial_seed() != \
        tb.step_generator(0, "recaption", 0).initial_seed()


def test_timestep_bias_weights_a_portion_of_the_timesteps():
    later = tb.timestep_weights(tb.TimestepBias(strategy="later", multiplier=3.0, portion=0.25), 4)
    assert torch.allclose(later, torch.tensor([1, 1, 1, 3], dtype=torch.float64) / 6)
    earlier = tb.timestep_weights(tb.TimestepBias(strategy="earlier", multiplier=3.0, portion=0.5), 4)
    assert torch.allclose(earlier, torch.tensor([3, 3, 1, 1], dtype=torch.float64) / 8)
    # drawn through _unet_loss's path: the noisiest half gets 2/3 of 20,000 draws (sd 0.0033)
    weights = tb.timestep_weights(tb.TimestepBias(multiplier=2.0, portion=0.5), 1000)
    t = torch.multinomial(weights, 20_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((t >= 500).float().mean().item() - 2 / 3) < 0.015
    with pytest.raises(ValueError, match="portion"):
        tb.TimestepBias(portion=0)


def test_recaption_config_accepts_one_round_or_a_list():
    one = tb.BaseTrainConfig.model_validate({"recaption": RECAPTION})
    assert one.recaption == tb.BaseTrainConfig.model_validate({"recaption": [RECAPTION]}).recaption
    assert tb.BaseTrainConfig.model_validate({"recaption": None}).recaption == []
    with pytest.raises(ValueError, match="probability"):
        tb.BaseTrainConfig.model_validate({"recaption": [{"probability": 2}]})


def test_init_from_an_exported_pipeline_trains_only_the_appended_round(finished_run, tmp_path):
    """The shipped model keeps only EMA weights and TRAINING.json: a new round continues it."""
    one_round = _recaption_run(finished_run, tmp_path / "run")
    tb.train_base(one_round)
    exported = tmp_path / "exported"
    tb.export_pipeline(tmp_path / "run", exported)
    two_rounds = {**TINY, "recaption": [RECAPTION, {**RECAPTION, "steps": 2}],
                  "init_from": str(exported)}
    cfg = load_config(tb.BaseTrainConfig, None, values={"out": str(tmp_path / "cont"), **two_rounds})
    (tmp_path / "cont" / "data").mkdir(parents=True)
    for rendered in ("images.npy", "rows.jsonl"):  # skip re-rendering, not re-encoding
        shutil.copy(tmp_path / "run" / "data" / rendered, tmp_path / "cont" / "data")
    pipeline = tb.train_base(cfg)

    start = load_pipeline(exported).unet.state_dict()
    seeded = load_file(tmp_path / "cont" / "recaption" / "checkpoint" / "unet.safetensors")
    assert all(torch.equal(start[k], seeded[k]) for k in start), "round 2 starts from the export"
    assert not (tmp_path / "cont" / "unet" / "loss.csv").exists(), "seeded stages do not train"
    assert len((tmp_path / "cont" / "recaption-2" / "loss.csv").read_text().splitlines()) == 1 + 2
    vae = load_pipeline(pipeline).vae
    assert vae.config.scaling_factor == load_pipeline(exported).vae.config.scaling_factor
    record = tb.export_pipeline(tmp_path / "cont", tmp_path / "exported-2")
    assert [(r["steps"], r["of_planned"]) for r in record["recaption"]] == [(4, 4), (2, 2)]
    assert record["config"]["init_from"] == str(exported)


def test_init_from_refuses_a_config_that_rewrites_finished_stages(finished_run, tmp_path):
    from equigen.errors import EquigenError

    tb.train_base(_recaption_run(finished_run, tmp_path / "run"))
    tb.export_pipeline(tmp_path / "run", tmp_path / "exported")
    for change, message in (({"recaption": [RECAPTION]}, None),
                            ({"unet": {**TINY["unet"], "steps": 5}}, "`unet:` section"),
                            ({"recaption": []}, "finished 1 recaption rounds"),
                            ({"recaption": [{**RECAPTION, "lr": 1e-3}]}, "round 1 .* differs")):
        values = {**TINY, **change, "init_from": str(tmp_path / "exported"),
                  "out": str(tmp_path / "cont")}
        cfg = load_config(tb.BaseTrainConfig, None, values=values)
        if message is None:  # the config it was trained with seeds a run
            tb.seed_from_pipeline(cfg)
            assert (tmp_path / "cont" / "recaption" / "final-ema" / "config.json").is_file()
            shutil.rmtree(tmp_path / "cont")
            continue
        with pytest.raises(EquigenError, match=message):
            tb.seed_from_pipeline(cfg)
        assert not (tmp_path / "cont").exists(), "nothing written before the config is checked"
    values = {**TINY, "init_from": str(tmp_path / "missing"), "out": str(tmp_path / "cont")}
    with pytest.raises(EquigenError, match="TRAINING.json not found"):
        tb.seed_from_pipeline(load_config(tb.BaseTrainConfig, None, values=values))


@pytest.mark.parametrize("earlier, later", [("base.yaml", "base-round4.yaml"),
                                            ("base-round4.yaml", "base-round5.yaml")])
def test_each_experiment_config_appends_one_round(earlier, later):
    """base-round4.yaml is base.yaml plus one round (so init_from=mini-world accepts it), and
    base-round5.yaml is base-round4.yaml plus one (so it continues the round-4 run)."""
    from equigen.config import read_yaml

    before = tb.BaseTrainConfig.model_validate(read_yaml(f"configs/world/{earlier}"))
    after = tb.BaseTrainConfig.model_validate(read_yaml(f"configs/world/{later}"))
    assert after.recaption[:-1] == before.recaption and len(after.recaption) == len(before.recaption) + 1
    assert after.model_dump(exclude={"recaption"}) == before.model_dump(exclude={"recaption"})
