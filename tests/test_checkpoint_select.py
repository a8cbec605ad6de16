"""Which checkpoint an evaluation uses (`--checkpoint-select best|last|step-N`).

Every checkpoint records the mean training reward r1 + r2 of the steps since the previous one; `best`
(SCoRe §6, score's default) takes the highest (ties: the later), `last` the newest intact one, `step-N`
that one. Pruning keeps the newest two and the best. The expected window means below are worked out by
hand from the hand-written logs, not by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import toy_task  # noqa: F401  (registers the toy-digit task)
from harness.checkpoint import (WEIGHTS, choose_checkpoint, damage, load_weights, save_checkpoint, select_checkpoint,
                                selection_label, temp_folder, train_reward, weights_digest, window_reward)
from harness.cli import app
from harness.compare import CompareConfig, plan
from harness.data import file_sha256
from harness.errors import HarnessError
from harness.evaluate import EvalConfig
from harness.method import METHODS

runner = CliRunner()

# A hand-written training log: checkpoints at steps 2, 4, 6 and 8, each over the two steps before it.
LOG = [{"step": 1, "r1": 0.25, "r2": 0.5}, {"step": 2, "r1": 0.5, "r2": 0.75},     # (0.75 + 1.25) / 2 = 1.0
       {"step": 3, "r1": 0.5, "r2": 1.0}, {"step": 4, "r1": 0.75, "r2": 1.0},      # (1.5 + 1.75) / 2 = 1.625
       {"step": 5, "r1": 0.25, "r2": 0.25}, {"step": 6, "r1": 0.5, "r2": 0.5},     # (0.5 + 1.0) / 2 = 0.75
       {"step": 7, "r1": 0.5, "r2": 0.5}, {"step": 8, "loss": 0.3, "skipped": 1.0}]  # 1.0 (step 8 has no reward)
WINDOW_MEANS = {2: 1.0, 4: 1.625, 6: 0.75, 8: 1.0}


def test_window_reward_is_the_mean_of_r1_plus_r2_over_the_steps_that_logged_them():
    for step, expected in WINDOW_MEANS.items():
        assert window_reward([r for r in LOG if step - 2 < r["step"] <= step]) == pytest.approx(expected)
    assert window_reward([{"step": 1, "loss": 0.5}]) is None  # e.g. a skipped step: nothing to rank by
    assert window_reward([]) is None


def hand_made_run(path: Path, rewards: dict[int, float | None], method: str = "score", keep: int = 2) -> Path:
    """A training run folder with real checkpoints (`save_checkpoint`), each recording the reward given."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"method": method, "model": "tiny-random", "task": "gsm8k"}))
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG))
    for step, reward in rewards.items():
        save_checkpoint(path / "checkpoints", step, {"weights": {"w": torch.full((2,), float(step))}},
                        {"train_reward": reward, "reward_window": [step - 1, step]}, keep=keep)
    return path


def names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_best_last_and_step_n_on_a_hand_made_run(tmp_path):
    run = hand_made_run(tmp_path / "run", WINDOW_MEANS, keep=10)
    assert select_checkpoint(run, "best").name == "step-000004"  # 1.625
    assert select_checkpoint(run, "last").name == "step-000008"
    assert select_checkpoint(run, "step-6").name == "step-000006"
    assert select_checkpoint(run, "step-000002").name == "step-000002"  # the folder's own name works too
    with pytest.raises(HarnessError, match=r"no checkpoint step-5; checkpoints there: step-2, step-4, step-6, step-8$"):
        select_checkpoint(run, "step-5")
    for bad in ("worst", "step-", "step-x", "step--1", "4", ""):
        with pytest.raises(HarnessError, match="--checkpoint-select must be best, last or step-N"):
            select_checkpoint(run, bad)


def test_best_breaks_ties_towards_the_later_checkpoint(tmp_path):
    run = hand_made_run(tmp_path / "run", {2: 1.0, 4: 0.5, 6: 1.0, 8: 0.25}, keep=10)
    assert select_checkpoint(run, "best").name == "step-000006"


def test_pruning_keeps_the_newest_two_and_the_best(tmp_path):
    run = hand_made_run(tmp_path / "run", {2: 1.0, 4: 1.625}, keep=2)
    save_checkpoint(run / "checkpoints", 6, {"weights": {"w": torch.zeros(2)}}, {"train_reward": 0.75})
    save_checkpoint(run / "checkpoints", 8, {"weights": {"w": torch.zeros(2)}}, {"train_reward": 1.0})
    assert names(run) == ["step-000004", "step-000006", "step-000008"]  # 4 is the best: kept
    save_checkpoint(run / "checkpoints", 10, {"weights": {"w": torch.zeros(2)}}, {"train_reward": 2.0})
    assert names(run) == ["step-000008", "step-000010"]  # the new best is among the newest two
    assert train_reward(run / "checkpoints" / "step-000010") == 2.0


def test_a_damaged_best_falls_back_to_the_next_best_saying_so(tmp_path, capsys):
    run = hand_made_run(tmp_path / "run", WINDOW_MEANS, keep=10)
    (run / "checkpoints" / "step-000004" / "weights.safetensors").write_bytes(b"torn")
    folder, how = choose_checkpoint(run, "best", say_fallback=True)
    assert (folder.name, how) == ("step-000008", "best")  # 1.0 at steps 2 and 8: the later one
    [line] = capsys.readouterr().err.splitlines()
    assert "step-000004: damaged (weights.safetensors changed" in line and "using step-000008" in line
    with pytest.raises(HarnessError, match="step-000004: damaged"):
        select_checkpoint(run, "step-4")


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # DCP's note on saving in one process
def test_a_sharded_checkpoint_is_checksummed_file_by_file_and_reads_whole(tmp_path):
    """FSDP's layout (weights.dcp/ and optimizer.dcp/ written by torch.distributed.checkpoint into the temp
    folder, then the rest and the rename): the weights an evaluation reads are checked by their own files."""
    import torch.distributed.checkpoint as dcp

    root = tmp_path / "run" / "checkpoints"
    tmp = temp_folder(root, 3)
    weights = {"layer.lora_A": torch.arange(6.0).reshape(2, 3), "layer.lora_B": torch.ones(3, 2)}
    dcp.save(weights, checkpoint_id=tmp / "weights.dcp", no_dist=True)
    dcp.save({"0": {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}}, checkpoint_id=tmp / "optimizer.dcp",
             no_dist=True)
    folder = save_checkpoint(root, 3, {"scheduler": {"last_epoch": 3}}, {"train_reward": 0.5}, written=True)
    assert folder.name == "step-000003" and not tmp.exists()
    loaded = load_weights(folder)
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    digest = weights_digest(folder)
    assert damage(folder) is None and damage(folder, WEIGHTS) is None
    [shard] = (folder / "optimizer.dcp").glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[:-1])
    assert damage(folder, WEIGHTS) is None  # an evaluation does not read the optimizer
    assert damage(folder) == f"optimizer.dcp/{shard.name} changed since it was saved (sha256 differs)"
    [shard] = (folder / "weights.dcp").glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[:-1])
    assert damage(folder, WEIGHTS) == f"weights.dcp/{shard.name} changed since it was saved (sha256 differs)"
    assert weights_digest(folder) != digest


def test_without_recorded_rewards_best_is_the_last_one(tmp_path, capsys):
    """SFT methods (and runs from before rewards were recorded) have no reward to rank by: asked for
    explicitly, best says in one line that it uses the last checkpoint; as a method's default, it is quiet."""
    run = hand_made_run(tmp_path / "run", {2: None, 4: None}, method="score")
    assert choose_checkpoint(run, "best") == (run / "checkpoints" / "step-000004", "last")
    default = EvalConfig(checkpoint=str(run), model="tiny-random")
    default.validate()
    assert (default.checkpoint_step, default.checkpoint_select) == ("step-000004", "last")
    assert capsys.readouterr().err == ""
    asked = EvalConfig(checkpoint=str(run), model="tiny-random", checkpoint_select="best")
    asked.validate()
    assert asked.checkpoint_step == "step-000004"
    [line] = capsys.readouterr().err.splitlines()
    assert "no intact checkpoint records a training reward" in line and "step-000004" in line


def test_the_default_is_the_methods_paper_choice(tmp_path):
    assert METHODS.get("score").checkpoint_select == "best"  # SCoRe §6
    assert {METHODS.get(m).checkpoint_select for m in ("a2c2stage", "rrr", "pair-sft", "star", "base")} == {"last"}
    for method, expected in (("score", "step-000004"), ("a2c2stage", "step-000008")):
        run = hand_made_run(tmp_path / method, WINDOW_MEANS, method=method, keep=10)
        config = EvalConfig(checkpoint=str(run), model="tiny-random")
        config.validate()
        assert config.checkpoint_step == expected
        chosen = EvalConfig(checkpoint=str(run), model="tiny-random", checkpoint_select="step-6")
        chosen.validate()
        assert (chosen.checkpoint_step, chosen.checkpoint_select) == ("step-000006", "step-6")
        assert chosen.run_dir() != config.run_dir()  # other weights: another eval run
    # The rule is not part of a run's identity (the checkpoint it chose is): best and step-4 share a run.
    run = tmp_path / "score"
    best, step4 = (EvalConfig(checkpoint=str(run), model="tiny-random", checkpoint_select=s) for s in ("best", "step-4"))
    best.validate(), step4.validate()
    assert best.run_dir() == step4.run_dir() and "checkpoint_select" not in best.identity()
    assert "checkpoint_select" not in EvalConfig().settings()  # base-model runs keep their config.yaml


def test_compare_rows_name_the_selected_checkpoint(tmp_path, data_dir):
    run = hand_made_run(tmp_path / "train-score-x", WINDOW_MEANS, keep=10)
    common = dict(methods=["base"], checkpoints=[str(run)], model="tiny-random", limit=2, data_dir=str(data_dir),
                  results_dir=str(tmp_path / "results"))
    for select, label in ((None, "score (best: step-4)"), ("best", "score (best: step-4)"),
                          ("last", "score (last: step-8)"), ("step-6", "score (step-6)")):
        prepared = plan(CompareConfig(**common, checkpoint_select=select))
        assert [row.label for row in prepared.rows] == ["base", label]
    default, last = CompareConfig(**common), CompareConfig(**common, checkpoint_select="last")
    assert "checkpoint_select" not in default.identity() and "checkpoint_select" not in default.settings()
    assert default.compare_id() != last.compare_id()
    assert selection_label("best", "step-000012") == "best: step-12" and selection_label("step-3", "step-000003") == "step-3"
    with pytest.raises(HarnessError, match="--checkpoint-select must be best, last or step-N"):
        plan(CompareConfig(**common, checkpoint_select="newest"))
    with pytest.raises(HarnessError, match="checkpoints there: step-2, step-4, step-6, step-8"):
        plan(CompareConfig(**common, checkpoint_select="step-3"))
    assert not (tmp_path / "results").exists()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args, message", [
    (["eval", "--checkpoint", "RUN", "--checkpoint-select", "worst"], "--checkpoint-select must be best, last or step-N"),
    (["eval", "--checkpoint", "RUN", "--checkpoint-select", "step-5"], "checkpoints there: step-2, step-4, step-6, step-8"),
    (["eval", "--checkpoint-select", "best"], "--checkpoint-select needs --checkpoint"),
    (["compare", "--checkpoints", "RUN", "--checkpoint-select", "step-x"], "must be best, last or step-N"),
    (["compare", "--methods", "base", "--checkpoint-select", "last"], "none given"),
])
def test_bad_selections_are_one_line_exit_2_and_write_nothing(tmp_path, data_dir, monkeypatch, args, message):
    run = hand_made_run(tmp_path / "run", WINDOW_MEANS, keep=10)
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    result = runner.invoke(app, [*(str(run) if a == "RUN" else a for a in args), "--model", "tiny-random",
                                 "--limit", "1", "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert files_under(tmp_path) == before


def test_a_real_run_records_window_rewards_and_eval_loads_the_selected_weights(tmp_path):
    """A tiny score run (checkpoints at 2, 4, 6): each checkpoint's recorded reward is the mean of r1 + r2
    of its two logged steps; then `eval`/`compare --checkpoint-select` evaluate exactly the chosen weights."""
    from harness.training.config import load_train_config
    from harness.training.loop import train

    sets = {"task": "toy-digit", "max_new_tokens": 4, "problems_per_step": 4, "samples_per_problem": 2,
            "checkpoint_every": 2, "method_options.stage1_steps": 2}
    run = train(load_train_config("cpu-tiny", None, [f"{k}={v}" for k, v in sets.items()],
                                  {"method": "score", "out": str(tmp_path / "run"), "max_steps": 6}))
    log = {r["step"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}
    means = {end: (log[end - 1]["r1"] + log[end - 1]["r2"] + log[end]["r1"] + log[end]["r2"]) / 2 for end in (2, 4, 6)}
    best = max((2, 4, 6), key=lambda end: (means[end], end))  # ties: the later
    assert names(run) == sorted({"step-000004", "step-000006", f"step-{best:06d}"})  # pruned, the best kept
    for folder in (run / "checkpoints").iterdir():
        state = json.loads((folder / "trainer_state.json").read_text())
        end = state["step"]
        assert state["train_reward"] == pytest.approx(means[end]) and state["reward_window"] == [end - 1, end]
    # Make the oldest checkpoint kept the best by far (trainer_state.json is not among its checksummed files).
    oldest = run / "checkpoints" / names(run)[0]
    state = json.loads((oldest / "trainer_state.json").read_text())
    (oldest / "trainer_state.json").write_text(json.dumps({**state, "train_reward": 5.0}))
    for select, folder in ((None, oldest.name), ("last", "step-000006"), ("step-6", "step-000006")):
        out = tmp_path / f"eval-{select}"
        result = runner.invoke(app, ["eval", "--checkpoint", str(run), "--task", "toy-digit", "--limit", "1",
                                     "--max-new-tokens", "2", "--out", str(out)]
                               + (["--checkpoint-select", select] if select else []))
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["model"]["id"].endswith(f"run/{folder}")
        assert manifest["model"]["weights_sha256"] == file_sha256(run / "checkpoints" / folder / "weights.safetensors")
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["checkpoint_step"] == folder and config["checkpoint_select"] == (select or "best")
        assert f"checkpoints/{folder} (--checkpoint-select {select or 'best'})" in result.output
    compared = runner.invoke(app, ["compare", "--task", "toy-digit", "--model", "tiny-random", "--methods", "base",
                                   "--checkpoints", str(run), "--limit", "1", "--max-new-tokens", "2",
                                   "--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output
    spec = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    row = spec["rows"][1]
    label = f"score (best: step-{int(oldest.name[5:])})"
    assert (row["label"], row["checkpoint_step"], row["checkpoint_select"]) == (label, oldest.name, "best")
    assert "checkpoint_step" not in spec["rows"][0]  # rows of training-free methods are as before
    assert label in (tmp_path / "cmp" / "table.md").read_text()
