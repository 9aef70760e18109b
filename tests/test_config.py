from pathlib import Path
from typing import Optional

import pytest

from equigen.config import StrictModel, load_config, parse_override
from equigen.errors import EquigenError


class Optim(StrictModel):
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


class Train(StrictModel):
    steps: int = 100
    optim: Optim = Optim()
    name: Optional[str] = None


class Cfg(StrictModel):
    seed: int = 0
    train: Train = Train()
    prompts: list[str] = []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    path = write(tmp_path, "seed: 3\ntrain:\n  steps: 7\n  optim: {lr: 0.01}\n")
    cfg = load_config(Cfg, path, ["train.optim.lr=3e-4", "prompts=[a, b]", "train.name=x"])
    assert cfg.seed == 3 and cfg.train.steps == 7
    assert cfg.train.optim.lr == pytest.approx(3e-4)
    assert cfg.train.optim.betas == (0.9, 0.999)
    assert cfg.prompts == ["a", "b"] and cfg.train.name == "x"


def test_flag_values_sit_between_yaml_and_set(tmp_path):
    path = write(tmp_path, "seed: 3\n")
    assert load_config(Cfg, path, values={"seed": 5}).seed == 5
    assert load_config(Cfg, path, ["seed=9"], values={"seed": 5}).seed == 9
    assert load_config(Cfg, path, values={"seed": None}).seed == 3


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = write(tmp_path, "train:\n  stepz: 5\n")
    with pytest.raises(EquigenError) as err:
        load_config(Cfg, path)
    msg = str(err.value)
    assert str(path) in msg and "train.stepz" in msg
    assert "valid keys here: name, optim, steps" in msg


def test_mistyped_value_names_key_value_and_expected_type(tmp_path):
    path = write(tmp_path, "train:\n  optim:\n    lr: fast\n")
    with pytest.raises(EquigenError) as err:
        load_config(Cfg, path)
    msg = str(err.value)
    assert str(path) in msg and "train.optim.lr" in msg and "'fast'" in msg and "float" in msg


def test_error_from_override_names_the_flag(tmp_path):
    with pytest.raises(EquigenError, match=r"--set train.steps.*'many'.*int"):
        load_config(Cfg, None, ["train.steps=many"])


def test_several_errors_are_all_listed(tmp_path):
    path = write(tmp_path, "seed: x\nbogus: 1\n")
    with pytest.raises(EquigenError) as err:
        load_config(Cfg, path)
    assert "'seed'" in str(err.value) and "'bogus'" in str(err.value)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path, "seed: 1\ntrain: [unclosed\n")
    with pytest.raises(EquigenError, match=r"line \d+.*not valid YAML"):
        load_config(Cfg, path)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(EquigenError, match="expected a mapping"):
        load_config(Cfg, write(tmp_path, "- 1\n- 2\n"))


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(EquigenError, match="config file not found"):
        load_config(Cfg, tmp_path / "nope.yaml")


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", ".a=1"])
def test_malformed_override(bad):
    with pytest.raises(EquigenError, match="KEY=VALUE"):
        parse_override(bad)


def test_override_through_a_value_is_refused():
    with pytest.raises(EquigenError, match="'seed' is a value, not a section"):
        load_config(Cfg, None, ["seed=1", "seed.x=2"])


def test_override_values_are_parsed_as_yaml():
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello world") == (["a"], "hello world")
    assert parse_override("a=") == (["a"], "")


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from equigen.audit.prompts import load_prompt_set
    from equigen.config import SHIPPED_CONFIGS, read_yaml

    monkeypatch.chdir(tmp_path)  # no ./configs here
    prompts = load_prompt_set("configs/prompts/mini-world-occupations.yaml")
    assert len(prompts.prompts) > 0
    assert read_yaml("configs/scoft/mini-world.yaml")["cultures"] == ["Kethu", "Zuloa"]
    # a local file of the same name wins over the shipped one
    (tmp_path / "configs" / "scoft").mkdir(parents=True)
    (tmp_path / "configs" / "scoft" / "mini-world.yaml").write_text("cultures: [Avel]\n")
    assert read_yaml("configs/scoft/mini-world.yaml")["cultures"] == ["Avel"]
    with pytest.raises(EquigenError, match=r"configs/nope.yaml .*prompts/mini-world-cultures.yaml"):
        read_yaml("configs/nope.yaml")
    assert (SHIPPED_CONFIGS / "prompts" / "sd-occupations.yaml").is_file()


def test_wheel_ships_the_configs(tmp_path):
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(root)], check=True, timeout=240)
    (wheel,) = tmp_path.glob("equigen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "equigen/configs/prompts/mini-world-occupations.yaml" in names
    assert "equigen/configs/scoft/mini-world.yaml" in names
