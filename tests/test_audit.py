"""The audit: prompt sets, results from known labels, and an exactly resumable run."""

import json

import numpy as np
import pytest

from equigen.audit import run as audit_run
from equigen.audit.prompts import load_prompt_set, prompt_seed
from equigen.audit.results import compute_results
from equigen.errors import EquigenError

PROMPTS = """
name: test set
attributes:
  tone: {groups: [very light, light, brown, dark]}
  style: {groups: [authentic, stereotyped], target: {authentic: 1.0}}
templates:
  - text: "a photo of a {occupation}"
    slots: {occupation: [doctor, chef]}
prompts:
  - {text: "a photo of a dark-skinned farmer", expect: {tone: dark}}
"""


def write_prompts(tmp_path, text=PROMPTS):
    path = tmp_path / "prompts.yaml"
    path.write_text(text)
    return path


def test_prompt_set_expands_templates_and_literals(tmp_path):
    prompt_set = load_prompt_set(write_prompts(tmp_path))
    assert [p.text for p in prompt_set.prompts] == [
        "a photo of a doctor", "a photo of a chef", "a photo of a dark-skinned farmer"]
    assert prompt_set.prompts[2].expect == {"tone": "dark"}
    assert prompt_set.target("style").tolist() == [1.0, 0.0]
    assert len({p.id for p in prompt_set.prompts}) == 3
    assert prompt_seed(0, "a", 1) == prompt_seed(0, "a", 1) != prompt_seed(0, "b", 1)


@pytest.mark.parametrize("bad, message", [
    ("expect: {tone: purple}", "not one of"),
    ("expect: {mood: dark}", "unknown attribute 'mood'"),
])
def test_prompt_set_errors_name_the_problem(tmp_path, bad, message):
    text = PROMPTS.replace("expect: {tone: dark}", bad.removeprefix("expect: ").join(["expect: ", ""]))
    with pytest.raises(EquigenError, match=message):
        load_prompt_set(write_prompts(tmp_path, text))


def test_template_with_undeclared_slot(tmp_path):
    text = PROMPTS.replace('"a photo of a {occupation}"', '"a photo of a {job}"')
    with pytest.raises(EquigenError, match="slot 'job'"):
        load_prompt_set(write_prompts(tmp_path, text))


def test_results_from_known_labels(tmp_path):
    prompt_set = load_prompt_set(write_prompts(tmp_path))
    doctor, chef, farmer = (p.id for p in prompt_set.prompts)
    labels = {
        doctor: {"tone": np.zeros(40, int), "style": np.zeros(40, int)},
        chef: {"tone": np.repeat([0, 1, 2, 3], 10), "style": np.repeat([0, 1], 20)},
        farmer: {"tone": np.array([3] * 30 + [0] * 10), "style": np.zeros(40, int)},
    }
    results = compute_results(prompt_set, labels, n_boot=200)
    by_id = {p["id"]: p for p in results["prompts"]}
    # all very light: p - u = (0.75, -0.25, -0.25, -0.25) -> FD = sqrt(0.75)
    assert by_id[doctor]["attributes"]["tone"]["fd"][0] == pytest.approx(np.sqrt(0.75), abs=1e-4)
    chef_fd = by_id[chef]["attributes"]["tone"]["fd"]
    assert chef_fd[0] == 0.0 and chef_fd[2] < 0.3
    # FD is biased upward at finite n: a fair model sampling 40 images scores about this much
    floor = by_id[chef]["attributes"]["tone"]["floor"]["fd"]
    assert 0.05 < floor < 0.2
    # style target (1, 0): chef is half stereotyped -> FD = sqrt(0.5^2 * 2)
    assert by_id[chef]["attributes"]["style"]["fd"][0] == pytest.approx(np.sqrt(0.5), abs=1e-4)
    assert "kl" not in by_id[chef]["attributes"]["style"]  # target with a zero: KL undefined
    # the farmer prompt names the tone: accuracy, not fairness
    assert by_id[farmer]["expect"]["tone"]["accuracy"][0] == pytest.approx(0.75)
    assert "fd" not in by_id[farmer]["attributes"]["tone"]
    fairness = results["summary"]["fairness"]["tone"]
    assert fairness["prompts"] == 2
    assert fairness["fd"][0] == pytest.approx(np.sqrt(0.75) / 2, abs=1e-4)
    assert results["summary"]["alignment"]["tone"][0] == pytest.approx(0.75)
    assert "tone x style" in results["summary"]["intersectional"]


def audit_config(tiny_model, prompts, out):
    return audit_run.AuditConfig(model=str(tiny_model), prompts=prompts, out=out, n=6,
                                 steps=2, batch_size=4, n_boot=100)


def test_stopped_audit_resumes_to_identical_results(tiny_model, tmp_path, monkeypatch):
    prompts = write_prompts(tmp_path)
    reference = audit_run.run_audit(audit_config(tiny_model, prompts, tmp_path / "a"))
    assert len(list((tmp_path / "a" / "images").rglob("*.png"))) == 18

    import equigen.models.generate as gen

    calls = {"n": 0}
    original = gen.generate_images

    def stop_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, "generate_images", stop_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        audit_run.run_audit(audit_config(tiny_model, prompts, tmp_path / "b"))
    assert len(list((tmp_path / "b" / "images").rglob("*.png"))) == 8  # two whole batches
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "interrupted"

    counted = {"images": 0}

    def count(*args, **kwargs):
        counted["images"] += len(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, "generate_images", count)
    resumed = audit_run.run_audit(audit_config(tiny_model, prompts, tmp_path / "b"))
    assert counted["images"] == 10, "only the missing batches are generated"
    assert resumed == reference
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    assert (tmp_path / "a" / "annotations.csv").read_text() == (tmp_path / "b" / "annotations.csv").read_text()


def test_audit_command_end_to_end(tiny_model, tmp_path, capsys):
    from equigen.cli import main

    out = tmp_path / "cli-audit"
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "audit", "--model", str(tiny_model), "--prompts",
              str(write_prompts(tmp_path)), "--n", "2", "--out", str(out),
              "--set", "steps=1", "--set", "n_boot=20", "--set", "batch_size=6",
              "--set", "sampler=euler-a"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "tone: FD" in printed and "tone when named" in printed
    for name in ("results.json", "annotations.csv", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["config"]["n"] == 2
    assert json.loads((out / "results.json").read_text())["config"]["sampler"] == "euler-a"
    assert "euler-a" in (out / "report.html").read_text()


def test_audit_sampler_is_checked_and_kept_across_a_resume(tmp_path):
    with pytest.raises(ValueError, match="sampler 'dpm' is not one of: dpm\\+\\+2m, euler-a"):
        audit_run.AuditConfig(sampler="dpm")
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"config": {"sampler": "euler-a"}}))
    with pytest.raises(EquigenError, match="sampler was 'euler-a', now None"):
        audit_run.check_resumable(audit_run.AuditConfig(out=out))
