"""`--feedback oracle` (issue 21): the verifier's protocol of RRR's evaluation, applied by the core to every
method. A correct attempt ends the episode (later turns carry it, nothing generated); the first request
after a wrong one says it was wrong; the protocol joins run and comparison identities only when it is
not "none", and labels the rows it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import feedback_task  # noqa: F401  (registers the feedback-toy task)
from harness.cli import app
from harness.compare import CompareConfig
from harness.evaluate import EvalConfig
from harness.method import FEEDBACKS, WRONG_ANSWER, OracleFeedback, feedback_label, get_method, with_feedback
from harness.prompts import SCORE_CORRECTION
from harness.paper_numbers import REPORTED, reported_rows
from harness.sampling import Sampling
from harness.task import get_task

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    from harness.models import load_model

    return load_model("tiny-random")


def generators(tiny):
    from harness.rollout import EngineGenerator, HFGenerator

    return {"hf": HFGenerator(tiny.model, tiny.tokenizer, 4), "engine": EngineGenerator(tiny.model, tiny.tokenizer, 4)}


def last_user(step) -> str:
    return next(m["content"] for m in reversed(step.messages) if m["role"] == "user")


@pytest.mark.parametrize("backend", ["hf", "engine"])  # the batched rounds and the streaming driver
@pytest.mark.parametrize("method", ["base", "rrr", "self-refine"])
def test_oracle_ends_correct_episodes_and_tells_wrong_ones(tiny, pool, method, backend):
    from harness.rollout import run_episodes
    from harness.sampling import SamplingParams

    task = get_task("feedback-toy")
    right, wrong = task.load("test")[:2]
    plain = get_method(method)
    oracle = with_feedback(plain, "oracle")
    assert isinstance(oracle, OracleFeedback) and oracle.name == method and with_feedback(plain, "none") is plain
    episodes = run_episodes(task, oracle, [right, wrong], generators(tiny)[backend], SamplingParams(max_new_tokens=4),
                            3, pool)
    ended, told = episodes

    # correct at attempt 1: nothing more is generated (no reflection, no feedback), attempts 2 and 3 are copies
    assert [s.kind for s in ended.steps] == ["attempt"] * 3 and ended.correct == [True] * 3
    first, *carried = ended.steps
    assert not first.carried and all(s.carried and s.completion_tokens == 0 and s.prompt_tokens == 0
                                      and s.text == first.text for s in carried)

    # wrong at attempt 1: the next request (the method's own, reflection or feedback included) says so first
    assert told.correct == [False] * 3 and not any(s.carried for s in told.steps)
    after = told.steps[1]
    assert last_user(after).startswith(WRONG_ANSWER + " ")
    if method == "base":
        assert after.kind == "attempt" and last_user(after) == f"{WRONG_ANSWER} {SCORE_CORRECTION}"
        assert after.messages[:-1] == told.steps[0].conversation()  # the method's request, one message changed
        assert last_user(told.steps[2]) == f"{WRONG_ANSWER} {SCORE_CORRECTION}"  # attempt 2 was wrong too
    if method == "rrr":
        from methods.rrr import REFLECT, RETRY

        assert [s.kind for s in told.steps] == ["attempt", "reflection", "attempt", "reflection", "attempt"]
        assert last_user(after) == f"{WRONG_ANSWER} {REFLECT}"
        assert last_user(told.steps[2]) == RETRY  # only the first request after the failed attempt
    if method == "self-refine":
        assert after.kind == "feedback"
        later = told.steps[2]  # the refinement (or, when the model's review said correct, nothing)
        assert later.kind == "attempt" and not last_user(later).startswith(WRONG_ANSWER)


def test_without_feedback_every_episode_gets_its_turns(tiny, pool):
    from harness.rollout import HFGenerator, run_episodes
    from harness.sampling import SamplingParams

    task = get_task("feedback-toy")
    right = task.load("test")[0]
    (episode,) = run_episodes(task, get_method("base"), [right], HFGenerator(tiny.model, tiny.tokenizer, 2),
                              SamplingParams(max_new_tokens=4), 2, pool)
    second = episode.attempts[1]
    assert not second.carried and second.completion_tokens > 0 and last_user(second) == SCORE_CORRECTION


def test_unknown_feedback_in_code_is_one_line():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="unknown feedback 'maybe'; choose from: none, oracle"):
        with_feedback(get_method("base"), "maybe")
    assert FEEDBACKS == ("none", "oracle")


def test_oracle_runs_have_their_own_ids_and_intrinsic_runs_keep_theirs():
    # Run folders from before --feedback (also checked in tests/test_backend.py)
    before = {"gsm8k-base-embedded-t2-4412d4ac", "math500-self-refine-tiny-random-t3-07fc7c26"}
    # hf: under auto the embedded model runs on llama.cpp where it is installed (a run of its own)
    configs = [EvalConfig(backend="hf"), EvalConfig(task="math500", method="self-refine", model="tiny-random", turns=3)]
    assert {c.run_dir().name for c in configs} == before
    assert "feedback" not in configs[0].identity()
    oracle = EvalConfig(feedback="oracle", backend="hf")
    assert oracle.identity()["feedback"] == "oracle"
    assert oracle.run_dir().name.startswith("gsm8k-base-embedded-t2-oracle-")
    assert oracle.run_dir().name[-8:] != configs[0].run_dir().name[-8:]
    assert "feedback" not in CompareConfig(methods=["base"]).identity()
    intrinsic = CompareConfig(methods=["base"], backend="hf").compare_id()
    assert CompareConfig(methods=["base"], feedback="oracle", backend="hf").compare_id() != intrinsic


@pytest.mark.parametrize("folder", sorted((REPO / "results" / "reference" / "compare").iterdir()), ids=lambda p: p.name)
def test_the_committed_comparisons_keep_their_ids(folder):
    """Every committed comparison and each of its runs: the same id from today's code (feedback none)."""
    spec = json.loads((folder / "compare.json").read_text())
    stored = dict(spec["config"])
    # They were generated when `auto` meant hf on every CPU; auto now runs the embedded model on llama.cpp
    # where it is installed and bf16 is not native (another run), so their backend is named.
    if stored.get("backend", "auto") == "auto":
        stored["backend"] = "hf"
    sampling = Sampling(**{k: stored.pop(k) for k in ("max_new_tokens", "temperature", "top_p")})
    config = CompareConfig(**stored, sampling=sampling)
    assert config.feedback == "none" and config.compare_id() == spec["id"]
    shared = {k: v for k, v in stored.items() if k not in ("methods", "checkpoints", "reported", "out")}
    for row in spec["rows"]:
        if not row.get("checkpoint"):
            run = EvalConfig(method=row["method"], **shared, sampling=sampling)
            assert run.run_dir().name == Path(row["run_dir"]).name


def test_labels_say_the_protocol():
    assert feedback_label("rrr", "oracle") == "rrr (oracle)" and feedback_label("base", "none") == "base"
    # reported rows are shown only beside rows of their protocol: today every row is intrinsic
    assert {r.protocol for r in REPORTED} == {"none"}
    assert reported_rows("math500", "oracle") == [] and reported_rows("math500") == reported_rows("math500", "none")


def test_compare_labels_oracle_rows_and_eval_refuses_a_folder_of_the_other_protocol(tmp_path, data_dir):
    results = tmp_path / "results"
    common = ["compare", "--task", "gsm8k", "--model", "tiny-random", "--methods", "base,self-refine", "--limit", "2",
              "--max-new-tokens", "4", "--data-dir", str(data_dir), "--results-dir", str(results), "--reported"]
    tables = {}
    for feedback in ("none", "oracle"):
        result = runner.invoke(app, [*common, "--feedback", feedback])
        assert result.exit_code == 0, result.output
        [folder] = [f for f in (results / "compare").iterdir() if f not in tables.values()]
        tables[feedback] = folder
    intrinsic, oracle = (tables[f] / "table.md" for f in ("none", "oracle"))
    assert "| base | " in intrinsic.read_text() and "| self-refine | " in intrinsic.read_text()
    assert "(oracle)" not in intrinsic.read_text()
    markdown = oracle.read_text()
    assert "| base (oracle) | " in markdown and "| self-refine (oracle) | " in markdown and "| base | " not in markdown
    assert "reported" not in markdown  # no paper reported gsm8k
    spec = json.loads((tables["oracle"] / "compare.json").read_text())
    assert [r["label"] for r in spec["rows"]] == ["base (oracle)", "self-refine (oracle)"]
    assert spec["config"]["feedback"] == "oracle"
    runs = [tables["oracle"] / r["run_dir"] for r in spec["rows"]]
    assert all("-t2-oracle-" in run.resolve().name for run in runs)
    # the tiny model is wrong on gsm8k: every second attempt of base was told so
    for line in (runs[0] / "samples.jsonl").read_text().splitlines():
        steps = json.loads(line)["steps"]
        assert steps[1]["messages"][-1]["content"] == f"{WRONG_ANSWER} {SCORE_CORRECTION}"

    # report of one oracle eval run labels its row too
    assert runner.invoke(app, ["report", str(runs[0])]).exit_code == 0
    assert "| base (oracle) | " in (runs[0] / "table.md").read_text()

    # an oracle run's folder is not resumed as an intrinsic run (or the other way round)
    out = runs[0].resolve()
    refused = runner.invoke(app, ["eval", "--task", "gsm8k", "--model", "tiny-random", "--limit", "2",
                                  "--max-new-tokens", "4", "--data-dir", str(data_dir), "--out", str(out)])
    assert refused.exit_code == 2 and "other settings (feedback)" in refused.output, refused.output


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_a_bad_feedback_is_one_line_exit_2(tmp_path, monkeypatch, data_dir, command):
    monkeypatch.chdir(tmp_path)
    args = [command, "--task", "gsm8k", "--model", "tiny-random", "--limit", "1", "--data-dir", str(data_dir),
            "--feedback", "maybe"]
    if command == "compare":
        args += ["--methods", "base"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--feedback" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


# The folder each committed study run would have had without --out, as the code before the shared run
# settings (harness/settings.py) named it: a training run's id must not move when its settings' code does.
STUDY_IDS = {"score": "train-score-gsm8k-embedded-13f71cb5", "star": "train-star-gsm8k-embedded-b3816312",
             "pair-sft": "train-pair-sft-gsm8k-embedded-3ab77765"}


@pytest.mark.parametrize("name", sorted(STUDY_IDS))
def test_the_committed_training_runs_keep_their_settings_and_ids(name):
    import yaml

    from harness.training.config import load_train_config

    path = REPO / "results" / "reference" / "study-gsm8k" / "runs" / name / "config.yaml"
    stored = yaml.safe_load(path.read_text())
    config = load_train_config(None, str(path))
    assert list(config.settings().items()) == list(stored.items())  # every key read back, in its order
    config.out = None
    assert config.run_dir().name == STUDY_IDS[name]


def test_the_configs_hold_every_shared_setting_as_declared():
    """Settings declared once: eval/compare's RolloutSettings and TrainConfig take each RunSettings field
    with its rule and help (a default may differ: training samples at T = 1, 8 rows)."""
    import dataclasses

    from harness.settings import RunSettings
    from harness.training.config import TrainConfig

    declared = {f.name: f.metadata for f in dataclasses.fields(RunSettings)}
    for config in (EvalConfig, CompareConfig, TrainConfig):
        held = {f.name: f.metadata for f in dataclasses.fields(config)}
        assert {name: held.get(name) for name in declared} == declared, config.__name__


@pytest.mark.parametrize("run", sorted((REPO / "results" / "reference" / "runs").iterdir()), ids=lambda p: p.name)
def test_the_committed_eval_runs_keep_their_config_files(run):
    """An eval run's config.yaml, read back into EvalConfig, keeps its keys in their order (a resume rewrites
    the file: settings added since, feedback and checkpoint_step, come in at their places, nothing moves)
    and gives the folder's id."""
    import yaml

    from harness.sampling import nest

    stored = yaml.safe_load((run / "config.yaml").read_text())
    values = nest({k: v for k, v in stored.items() if k != "auto_dtype"})
    config = EvalConfig(**{**values, "sampling": Sampling(**values["sampling"]), "out": None,
                           "backend": "hf" if values.get("backend", "auto") == "auto" else values["backend"]})
    assert [k for k in config.settings() if k in stored] == [k for k in stored if k != "auto_dtype"]
    assert config.run_dir().name == run.name
