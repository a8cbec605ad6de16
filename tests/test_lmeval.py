"""lm-eval integration: the selfcorrect_* task configs, `--model selfcorrect`, `harness lm-eval`, and our
graders against lm-eval's own gsm8k / minerva_math500 scoring on fixed model outputs.

Offline: a tiny random Qwen2 model (`tiny_model_dir("tiny-random")`), local data, HF_*_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.lmeval import INSTALL_HINT, TASKS_DIR
from harness.prompts import SCORE_CORRECTION
from harness.task import Item, get_task

needs_lm_eval = pytest.mark.skipif(find_spec("lm_eval") is None, reason=f"lm-eval is not installed ({INSTALL_HINT})")
BIN = Path(sys.executable).parent
LIMIT = 4
GEN = "max_gen_toks=12"  # a random model never stops by itself: keep attempts short


@pytest.fixture(scope="module")
def tiny() -> Path:
    from harness.models import tiny_model_dir

    return tiny_model_dir("tiny-random")


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "HARNESS_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    return sorted((json.loads(line) for line in files[0].read_text().splitlines()), key=lambda s: s["doc_id"])


# `harness ARGS` with lm-eval's TaskManager told to leave out lm-eval's built-in tasks.
SKIP_LM_EVAL_TASKS = """
import sys, harness
from lm_eval.tasks import manager
init = manager.TaskManager.__init__
manager.TaskManager.__init__ = lambda self, *a, include_defaults=True, **k: init(self, *a, include_defaults=False, **k)
from harness.cli import main
sys.argv = ["harness", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module", autouse=True)
def cli_processes(tiny, data_dir, tmp_path_factory):
    """Both CLI runs, started in the background as the module starts; the tests at its end wait for them."""
    if find_spec("lm_eval") is None:
        yield {}, None
        return
    root = tmp_path_factory.mktemp("lmeval")
    common = ["--tasks", "selfcorrect_gsm8k", "--limit", str(LIMIT), "--device", "cpu", "--batch_size", str(LIMIT),
              "--gen_kwargs", GEN, "--apply_chat_template", "--log_samples"]
    commands = {
        # lm-eval's own CLI with its own HF model: our tasks only through --include_path.
        "hf": [str(BIN / "lm_eval"), "--include_path", str(TASKS_DIR), "--model", "hf",
               "--model_args", f"pretrained={tiny}", "--output_path", str(root / "hf"), *common],
        # `harness lm-eval ...` (our passthrough: no --include_path needed, `selfcorrect` registered), in a
        # process whose lm-eval skips indexing its own ~15k task configs (10 s of CPU), not needed here.
        "selfcorrect": [sys.executable, "-c", SKIP_LM_EVAL_TASKS, "lm-eval", "--model", "selfcorrect", "--model_args",
                        f"pretrained={tiny},turns=2,attempts_file={root / 'attempts.jsonl'}",
                        "--output_path", str(root / "selfcorrect"), *common],
    }
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(data_dir))
             for name, cmd in commands.items()}
    yield procs, root
    for proc in procs.values():  # e.g. `-k` selected none of the tests that wait
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def cli_runs(cli_processes) -> dict[str, tuple[int, str, Path]]:
    procs, root = cli_processes
    return {name: (*_finish(proc), root) for name, proc in procs.items()}


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output


# --------------------------------------------------------------------------------------------- registration


def test_import_harness_registers_selfcorrect_lazily():
    code = ("import sys, harness\n"
            "assert not {'lm_eval', 'torch'} & set(sys.modules), 'import harness must stay light'\n"
            "from lm_eval.api.registry import model_registry\n"
            "assert dict(model_registry.items())['selfcorrect'] == 'harness.lmeval.model:SelfCorrectLM'\n"
            "assert 'hf' in model_registry, 'lm-eval models must still be listed'\n"
            "assert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lm_eval_path_prints_the_task_folder():
    result = CliRunner().invoke(app, ["lm-eval-path"])
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip())
    assert folder == TASKS_DIR
    assert {p.name for p in folder.glob("*.yaml")} == {"selfcorrect_gsm8k.yaml", "selfcorrect_math500.yaml",
                                                         "selfcorrect_humaneval.yaml"}


def test_harness_lm_eval_without_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval.__main__", None)  # makes `from lm_eval.__main__ import ...` fail
    result = CliRunner().invoke(app, ["lm-eval", "--model", "hf", "--tasks", "selfcorrect_gsm8k"])
    assert result.exit_code == 2, result.output
    assert INSTALL_HINT in " ".join(result.output.split())


@needs_lm_eval
def test_harness_lm_eval_passes_args_unchanged_and_adds_our_tasks(monkeypatch):
    import lm_eval.__main__
    from lm_eval.tasks import manager

    seen = {}

    def fake_cli() -> None:  # what lm-eval's CLI would see and index
        seen["argv"] = list(sys.argv)
        seen["paths"] = manager.TaskManager(include_path="/elsewhere", include_defaults=False).include_path
        seen["tasks"] = manager.TaskManager(include_defaults=False).all_tasks

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", fake_cli)
    original_init = manager.TaskManager.__init__
    args = ["run", "--tasks", "selfcorrect_gsm8k", "--include_path", "/elsewhere", "--model_args", "a=1,b=2"]
    result = CliRunner().invoke(app, ["lm-eval", *args])
    assert result.exit_code == 0, result.output
    assert seen["argv"] == ["lm-eval", *args]
    assert seen["paths"] == ["/elsewhere", str(TASKS_DIR)]
    assert {"selfcorrect_gsm8k", "selfcorrect_math500"} <= set(seen["tasks"])
    assert manager.TaskManager.__init__ is original_init  # restored afterwards


# --------------------------------------------------------------------------------------------- task configs


@needs_lm_eval
def test_task_docs_are_our_items_and_need_data_offline(data_dir, monkeypatch):
    from lm_eval.tasks._yaml_loader import load_yaml

    from harness.lmeval.tasks import utils

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    for name, hub in (("gsm8k", "openai/gsm8k"), ("math500", "HuggingFaceH4/MATH-500")):
        config = load_yaml(TASKS_DIR / f"selfcorrect_{name}.yaml", resolve_func=False)
        assert config["dataset_path"] == hub and config["output_type"] == "generate_until"
        assert [m["metric"] for m in config["metric_list"]] == ["acc"]
        docs = getattr(utils, f"load_{name}")()["test"]
        items = get_task(name).load("test")
        assert len(docs) == len(items) == {"gsm8k": 1319, "math500": 500}[name]
        for doc, item in zip(docs.select(range(3)), items):
            assert (doc["id"], doc["question"], doc["answer"]) == (item.id, item.question, item.answer)
            assert [{"role": "system", "content": doc["system"]}, {"role": "user", "content": utils.doc_to_text(doc)}] \
                == get_task(name).prompt(item)
            assert utils.process_results(doc, [f"\\boxed{{{item.answer}}}"]) == {"acc": 1}
            assert utils.process_results(doc, ["I do not know."]) == {"acc": 0}
    monkeypatch.delenv("HARNESS_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no data dir and no hub: one clear line, never a hang
    with pytest.raises(HarnessError, match="HARNESS_DATA_DIR"):
        utils.load_gsm8k()


@needs_lm_eval
def test_simple_evaluate_selfcorrect_after_import_harness(tiny, data_dir, monkeypatch, tmp_path):
    import harness  # noqa: F401  registers the model
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    attempts = tmp_path / "attempts.jsonl"
    out = simple_evaluate(
        model="selfcorrect", model_args={"pretrained": str(tiny), "turns": 3, "attempts_file": str(attempts)},
        tasks=["selfcorrect_math500"], task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=2, device="cpu", gen_kwargs={"max_gen_toks": 6}, log_samples=True,
    )
    assert "acc,none" in out["results"]["selfcorrect_math500"]
    episodes = [json.loads(line) for line in attempts.read_text().splitlines()]
    assert [len(e["attempts"]) for e in episodes] == [3, 3]
    for episode in episodes:  # no chat template asked for: the transcript continues as plain text
        p1, p2, p3 = episode["prompts"]
        a1, a2, _ = episode["attempts"]
        assert p2 == p1 + f"{a1}\n\n{SCORE_CORRECTION}\n\n"
        assert p3 == p2 + f"{a2}\n\n{SCORE_CORRECTION}\n\n"
    resps = sorted(s["resps"][0][0] for s in out["samples"]["selfcorrect_math500"])
    assert resps == sorted(e["attempts"][-1] for e in episodes)


@needs_lm_eval
def test_selfcorrect_asks_each_request_in_its_tasks_wording():
    """Between attempts: the `instruction` model arg, else the harness task's correction instruction on a
    selfcorrect_<task> request (code wording on HumanEval), else SCoRe's (any other lm-eval task)."""
    from lm_eval.api.instance import Instance

    from harness.lmeval.model import SelfCorrectLM
    from tasks.code_prompts import CODE_CORRECTION

    model = object.__new__(SelfCorrectLM)  # no weights: only the instruction and plain-text prompt logic
    model.instruction, model._chats, model._warned_plain = None, {}, False

    def request(task_name: str) -> Instance:
        return Instance("generate_until", {}, ("ctx", {}), 0, (task_name, 0, 1))

    code = model.instruction_for(request("selfcorrect_humaneval"))
    assert code == CODE_CORRECTION and "```python code block" in code and "Final Answer" not in code
    assert model.next_prompt("ctx ", ["a1"], code) == f"ctx a1\n\n{CODE_CORRECTION}\n\n"
    for math in ("selfcorrect_gsm8k", "selfcorrect_math500", "gsm8k", "minerva_math500", "selfcorrect_unknown"):
        assert model.instruction_for(request(math)) == SCORE_CORRECTION  # as before, byte for byte
    assert model.next_prompt("ctx ", ["a1"]) == f"ctx a1\n\n{SCORE_CORRECTION}\n\n"
    model.instruction = "Check again."
    assert model.instruction_for(request("selfcorrect_humaneval")) == "Check again."


@needs_lm_eval
def test_simple_evaluate_selfcorrect_humaneval_uses_the_code_instruction(tiny, data_dir, monkeypatch, tmp_path):
    import harness  # noqa: F401  registers the model
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tasks.code_prompts import CODE_CORRECTION

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    attempts = tmp_path / "attempts.jsonl"
    simple_evaluate(
        model="selfcorrect", model_args={"pretrained": str(tiny), "turns": 2, "attempts_file": str(attempts)},
        tasks=["selfcorrect_humaneval"], task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=2, device="cpu", gen_kwargs={"max_gen_toks": 4},
    )
    episodes = [json.loads(line) for line in attempts.read_text().splitlines()]
    assert len(episodes) == 2
    for episode in episodes:
        p1, p2 = episode["prompts"]
        assert p2 == p1 + f"{episode['attempts'][0]}\n\n{CODE_CORRECTION}\n\n"
        assert "Final Answer" not in p2


# --------------------------------------------------------------------------------------------- agreement

FINAL = "Final Answer: The final answer is ${}$. I hope it is correct."

# (gold, response): realistic MATH500 outputs. Gold strings are MATH500-style `answer` fields.
MATH_CASES = [
    (r"\frac{14}{3}", "Adding gives $\\frac{14}{3}$.\n" + FINAL.format(r"\frac{14}{3}")),
    (r"\frac{14}{3}", r"So $x = \boxed{\dfrac{14}{3}}$."),
    (r"\frac{1}{2}", r"The probability is $\boxed{0.5}$."),
    (r"[2,5)", r"The domain is $\boxed{[2,5)}$."),
    (r"[2,5)", r"The domain is $\boxed{[2,5]}$."),
    (r"2\sqrt{2}", r"The distance is $\boxed{\sqrt{8}}$."),
    (r"\left( 3, \frac{\pi}{2} \right)", r"The polar coordinates are $\boxed{(3, \frac{\pi}{2})}$."),
    (r"\left( 3, \frac{\pi}{2} \right)", r"The polar coordinates are $\boxed{(3, \pi)}$."),
    (r"\text{Evelyn}", r"Evelyn has the greatest average speed, so the answer is $\boxed{\text{Evelyn}}$."),
    (r"10", r"Thus $n = \boxed{12}$."),
    (r"90^\circ", r"The angle measures $\boxed{90^\circ}$."),
    (r"3, 5", r"The solutions are $\boxed{5, 3}$."),
    (r"p - q", FINAL.format("q - p")),
    (r"x^2+7x+10", r"Expanding, we get $\boxed{x^2 + 7x + 10}$."),
    (r"5", r"Solving the equation gives $x = 5$."),
    (r"5", r"I am not sure how to solve this problem."),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"So $\mathbf{v} = \boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}$."),
    (r"10000", r"There are $\boxed{10,000}$ such numbers."),
    (r"(-\infty, -2) \cup (3, \infty)", r"The solution set is $\boxed{(-\infty,-2)\cup(3,\infty)}$."),
    (r"12", r"The perimeter is $\boxed{12\text{ cm}}$."),
    (r"25\%", r"The percentage is $\boxed{25\%}$."),
    (r"8", "At first I thought $\\boxed{7}$, but recounting gives 8.\n" + FINAL.format("8")),
    (r"y = 2x + 3", r"The line is $\boxed{y=2x+3}$."),
    (r"\frac{\sqrt{3}}{2}", r"So $\sin 60^\circ = \boxed{\frac{1}{2}\sqrt{3}}$."),
    (r"-\frac{2}{3}", r"Hence $\frac{a}{b} = \boxed{-2/3}$."),
    (r"1 + 2i", r"Therefore $z = \boxed{2i+1}$."),
    (r"\$18.90", r"The total cost is $\boxed{\$18.90}$."),
    (r"\frac{1}{4}", r"The answer is $\boxed{\frac{1"),  # cut off mid-answer
    (r"2516_8", r"In base 8 the sum is $\boxed{2516_8}$."),
    (r"6", FINAL.format("7")),
    (r"\frac{3}{4}", r"So the ratio is 3:4, that is $\boxed{\frac34}$."),
    (r"-1", r"We get $x=-1$ or $x=2$, but $x=2$ is extraneous, so $\boxed{-1}$."),
    (r"4", r"Thus there are four ways, $\boxed{\text{four}}$."),
    (r"6", FINAL.format("6") + "\n\nProblem:\nCompute $2+2$.\n\nSolution:\n$2+2=4$."),  # a base model runs on
    (r"11", r"We have $3n = 33$ and $n = 11$."),
    (r"\text{(C)}", r"The answer is $\boxed{C}$."),
    (r"\frac{\sqrt{3}}{2}", r"So the value is approximately $0.866$."),
    (r"5", r"$x = 5$ or $x = -5$, so $x = \pm 5$."),
    (r"\frac{9}{4}", r"So $k = \boxed{2.25}$."),
    (r"\text{even}", r"The function is even."),
]
# Every case where our verdict differs from lm-eval minerva_math500's `math_verify`, and why.
MATH_DISAGREEMENTS: dict[str, tuple[bool, str]] = {}  # none since grader version 2 (issue 10)

# (gold solution as in GSM8K's `answer` field, response)
GSM8K_CASES = [
    ("She sells 9 eggs at $2.\n#### 18", "Janet sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars.\n#### 18"),
    ("#### 18", "She makes 9 * 2 = $18 every day. The answer is 18."),
    ("#### 1234", "Adding them up gives 1,000 + 234 = 1,234. The answer is 1,234."),
    ("#### 18", "She makes 9 * $2 = $18.00 every day."),
    ("#### 18", "She makes $18 every day at the market."),
    ("#### 18", "16 - 3 - 4 = 10, and 10 * 2 = 20. The answer is 17."),
    ("#### 18", "9 * 2 = 18\n" + FINAL.format("18")),
    ("#### 18", "So she makes \\boxed{18} dollars."),
    ("#### 18", "The answer is 18. Check: 9 * 2 = 18."),
    ("#### 18", "The answer is 18. (Check: 16 - 3 - 4 = 9 eggs.)"),
    ("#### 70000", "The profit is 150,000 - 80,000 = $70,000."),
    ("#### 25", "25 out of 100 is 25%. The answer is 25%."),
    ("#### 18", "She earns 18 dollars"),
    ("#### 18", "She earns eighteen dollars."),
    ("#### 18", "She earns 9 * 2 = 18.5 dollars."),
    ("#### 18", "The answer is 18.\n\nQuestion: A farmer has 12 cows and buys 3 more. How many cows?"),
    ("#### 42", "He has 6*7=<<6*7=42>>42 apples.\n#### 42"),
    ("#### 18", "Let x = 5, so 5 + 13 = 18."),
    ("#### 1000000", "The answer is 1,000,000."),
    ("#### 330", "The answer is 5 hours and 30 minutes."),
    ("#### 12", "She has 3 apples, 4 pears, and 5 plums, so 12 fruits."),
    ("#### 1234", "The answer is 1234 dollars."),
    ("#### 18", "The answer is 18.0"),
    ("#### 18", "The answer is 5 more than 13, i.e. 18."),
    ("#### 3", "The temperature changes by -3 degrees, so it dropped 3 degrees."),
    ("#### 5", "The balance is -5 dollars."),
    ("#### 18", "The answer is 18.\nNote: this took 2 steps."),
    ("#### 7", "He has 7 left."),
    ("#### 160", "The total is 2 * 80 = 160 km. The answer is 160 km."),
    ("#### 15", "15"),
]
# Every case where our verdict (True/False) differs from lm-eval gsm8k's flexible-extract exact match, and why.
GSM8K_DISAGREEMENTS = {
    "She makes 9 * $2 = $18.00 every day.": (True, "we compare values (18.00 = 18); lm-eval compares strings"),
    "The answer is 18.0": (True, "we compare values (18.0 = 18); lm-eval compares strings"),
    "The answer is 18. (Check: 16 - 3 - 4 = 9 eggs.)": (
        True, "we read the number after 'answer is'; lm-eval takes the last number in the text (9)"),
    "The answer is 18.\n\nQuestion: A farmer has 12 cows and buys 3 more. How many cows?": (
        True, "a base model running on into a new question: lm-eval takes its last number (3)"),
    "The answer is 18.\nNote: this took 2 steps.": (True, "lm-eval takes the last number (2), we the stated answer"),
    "The answer is 5 more than 13, i.e. 18.": (
        False, "we take the first number after 'answer is' (5); lm-eval's last number (18) happens to be right"),
}
# Cases where one side extracts no answer at all (left out of the comparison, as the brief says).
GSM8K_NO_ANSWER = {"She earns eighteen dollars."}


@needs_lm_eval
def test_math_grader_agrees_with_lm_eval_minerva_math_verify():
    from lm_eval.tasks.minerva_math import utils as minerva

    assert len(MATH_CASES) >= 25
    task = get_task("math500")
    disagreements = {}
    for gold, response in MATH_CASES:
        # lm-eval's minerva doc: math_verify reads the gold from the solution's last \boxed{}
        solution = f"Working it out, the answer is $\\boxed{{{gold}}}$."
        doc = minerva.process_docs(_one_row({"problem": "", "solution": solution}))[0]
        theirs = bool(minerva.process_results(doc, [response])["math_verify"])
        ours = task.grade(Item("case", "", gold), response).correct
        if ours != theirs:
            disagreements[response] = ours
    assert all(len(reason) > 20 for _, reason in MATH_DISAGREEMENTS.values())
    assert disagreements == {r: verdict for r, (verdict, _) in MATH_DISAGREEMENTS.items()}


@needs_lm_eval
def test_gsm8k_grader_agrees_with_lm_eval_flexible_extract():
    from harness.lmeval.reference import gsm8k_config, gsm8k_flexible_extract
    from tasks.gsm8k import gold_from_solution

    assert len(GSM8K_CASES) >= 20
    config = gsm8k_config()
    flexible = next(f["filter"] for f in config["filter_list"] if f["name"] == "flexible-extract")
    assert [step["function"] for step in flexible] == ["regex", "take_first"]
    metric = config["metric_list"][0]
    assert metric["metric"] == "exact_match"
    judge = gsm8k_flexible_extract(config)

    task = get_task("gsm8k")
    disagreements, no_answer = {}, set()
    for solution, response in GSM8K_CASES:
        theirs, extracted = judge(solution, response)
        grade = task.grade(Item("case", "", gold_from_solution(solution, "case")), response)
        if grade.extracted is None or extracted == judge.fallback:
            no_answer.add(response)
        elif grade.correct != theirs:
            disagreements[response] = grade.correct
    assert no_answer == GSM8K_NO_ANSWER
    assert all(len(reason) > 20 for _, reason in GSM8K_DISAGREEMENTS.values())
    assert disagreements == {r: verdict for r, (verdict, _) in GSM8K_DISAGREEMENTS.items()}


# ------------------------------------------------------------------------- the CLI runs (started with the module)


@needs_lm_eval
def test_lm_eval_cli_runs_our_task_offline_with_our_prompt(cli_runs, tiny):
    from transformers import AutoTokenizer

    returncode, output, root = cli_runs["hf"]
    assert returncode == 0, output[-3000:]
    results = json.loads(next((root / "hf").rglob("results_*.json")).read_text())
    samples = _samples(root / "hf", "selfcorrect_gsm8k")
    assert len(samples) == LIMIT
    assert results["results"]["selfcorrect_gsm8k"]["acc,none"] == sum(s["acc"] for s in samples) / LIMIT
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    task = get_task("gsm8k")
    for sample in samples:
        item = Item(sample["doc"]["id"], sample["doc"]["question"], sample["doc"]["answer"])
        # with --apply_chat_template, lm-eval sends exactly the prompt `harness eval` sends
        expected = tokenizer.apply_chat_template(task.prompt(item), add_generation_prompt=True, tokenize=False)
        assert sample["arguments"]["gen_args_0"]["arg_0"] == expected
        assert sample["acc"] == int(task.grade(item, sample["resps"][0][0]).correct)


@needs_lm_eval
def test_harness_lm_eval_selfcorrect_answers_with_the_second_attempt(cli_runs, tiny):
    from transformers import AutoTokenizer

    returncode, output, root = cli_runs["selfcorrect"]
    assert returncode == 0, output[-3000:]
    samples = _samples(root / "selfcorrect", "selfcorrect_gsm8k")
    episodes = {e["context"]: e for e in map(json.loads, (root / "attempts.jsonl").read_text().splitlines())}
    assert len(samples) == len(episodes) == LIMIT
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    task = get_task("gsm8k")
    hf_answers = {s["doc_id"]: s["resps"][0][0] for s in _samples(root / "hf", "selfcorrect_gsm8k")}
    for sample in samples:
        context = sample["arguments"]["gen_args_0"]["arg_0"]
        episode = episodes[context]
        first, second = episode["prompts"]  # two generate calls per request
        assert first == context
        attempt1, attempt2 = episode["attempts"]
        assert attempt1 == hf_answers[sample["doc_id"]]  # attempt 1 is what `--model hf` answers
        # attempt 2 answers [prompt, attempt 1, user: SCoRe instruction], rendered by the chat template
        item = Item(sample["doc"]["id"], sample["doc"]["question"], sample["doc"]["answer"])
        chat = task.prompt(item) + [{"role": "assistant", "content": attempt1},
                                    {"role": "user", "content": SCORE_CORRECTION}]
        assert second == tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert sample["resps"] == [[attempt2]]  # lm-eval scored the second attempt
        assert sample["acc"] == int(task.grade(item, attempt2).correct)


def _one_row(row: dict):
    import datasets

    return datasets.Dataset.from_list([row])
