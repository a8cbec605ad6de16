"""Sampling settings are declared once (harness.sampling.Sampling): eval, compare and train take their
options from it, the configs hold it, and run folders still store them flat under their old names."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from typer.main import get_command

from harness.cli import app
from harness.evaluate import EvalConfig
from harness.sampling import SamplingParams
from harness.sampling import SAMPLING_FIELDS, Sampling, flatten, nest
from harness.training.config import TrainConfig, load_train_config


def options_of(command: str) -> dict[str, object]:
    """--option name -> its default, as click sees the command."""
    click_command = get_command(app).commands[command]
    return {p.name: p.default for p in click_command.params}


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_eval_and_compare_options_are_made_from_the_dataclass(command):
    options = options_of(command)
    for f in dataclasses.fields(Sampling):
        assert options[f.name] == f.default, f.name
    # and the other shared rollout settings, with the config's defaults
    for name in ("split", "limit", "turns", "seed", "batch_size", "dtype", "device", "backend"):
        assert options[name] == getattr(EvalConfig(), name), name


def test_train_sampling_options_default_to_not_given():
    options = options_of("train")
    assert all(options[name] is None for name in SAMPLING_FIELDS)


def test_train_temperature_option_sets_the_nested_setting():
    from typer.testing import CliRunner

    # what `train --temperature 0.25` hands the loader (an explicit option, over the preset)
    config = load_train_config("cpu-tiny", None, [], {"method": "score", "temperature": 0.25})
    assert config.sampling == Sampling(max_new_tokens=16, temperature=0.25, top_p=1.0)
    result = CliRunner().invoke(app, ["train", "--method", "score", "--preset", "cpu-tiny", "--temperature", "-1"])
    assert result.exit_code == 2 and "train.temperature must be >= 0" in result.stderr


def test_layers_nest_in_order(tmp_path):
    # preset (flat max_new_tokens=16) < YAML (nested) < --set (flat): the later layer wins either way
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sampling": {"max_new_tokens": 32, "top_p": 0.9}}))
    config = load_train_config("cpu-tiny", str(path), ["top_p=0.5"], {"method": "score"})
    assert config.sampling == Sampling(max_new_tokens=32, temperature=1.0, top_p=0.5)
    nested = load_train_config("cpu-tiny", None, ["sampling.temperature=0.7"], {"method": "score"})
    flat = load_train_config("cpu-tiny", None, ["temperature=0.7"], {"method": "score"})
    assert nested == flat and nested.sampling.temperature == 0.7


def test_stored_config_is_flat_and_reads_back(tmp_path):
    config = load_train_config("cpu-tiny", None, ["temperature=0.5"], {"method": "score"})
    stored = config.settings()
    assert "sampling" not in stored and stored["temperature"] == 0.5 and stored["max_new_tokens"] == 16
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored, sort_keys=False))
    assert load_train_config(None, str(path)) == config  # a resume reads what the run stored
    eval_settings = EvalConfig(sampling=Sampling(temperature=0.3)).settings()
    assert eval_settings["temperature"] == 0.3 and "sampling" not in eval_settings
    keys = list(eval_settings)  # in the place the three flat fields had, so config.yaml reads as before
    assert keys[keys.index("batch_size") + 1: keys.index("dtype")] == ["max_new_tokens", "temperature", "top_p"]


def test_flatten_and_nest_are_inverse():
    settings = {"task": "gsm8k", "sampling": {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9}, "seed": 3}
    assert flatten(settings) == {"task": "gsm8k", "max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    assert nest(flatten(settings)) == {"task": "gsm8k", "seed": 3, "sampling": settings["sampling"]}
    assert nest({"task": "x"}) == {"task": "x"}  # nothing to gather: no empty mapping appears


def test_generator_params_carry_the_run_settings():
    sampling = TrainConfig().sampling
    params = SamplingParams.of(sampling, seed=11)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.n, params.seed) == (256, 1.0, 1.0, 1, 11)
