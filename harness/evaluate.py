"""`harness eval`: roll out K-attempt episodes for a task's problems and score them, resumably."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from harness.config import check_fields, setting
from harness.data import local_data_files
from harness.model_size import model_parameters
from harness.errors import HarnessError, warn
from harness.manifest import build_manifest
from harness.method import FEEDBACKS, get_method, with_feedback
from harness.metrics import TurnMetrics, score_episodes
from harness.rollout.episode import episodes_of
from harness.rollout.backend import resolve_backend
from harness.sampling import Sampling, flatten
from harness.settings import shared
from harness.store import RunStore, run_hash
from harness.task import get_task

# Settings that do not change what a problem's episode is; a rerun that differs only in these
# resumes the same run (e.g. a larger --limit extends it).
# checkpoint_select is not one: checkpoint_step names the checkpoint it chose.
NOT_IDENTITY = {"limit", "batch_size", "out", "data_dir", "device", "results_dir", "backend", "checkpoint_select"}


@dataclass
class RolloutSettings:
    """What every evaluation of a comparison shares: the run settings (`shared`: harness/settings.py) and
    which problems, how many attempts, under which protocol; in the order of an eval run's config.yaml."""

    # A field with `help` is a command-line option of eval and compare, made from the field (cli.py).
    task: str = shared("task")
    split: str = setting("test", help="Which split to evaluate.")
    model: str = shared("model")
    limit: int | None = setting(None, ge=1, help="Only the first N problems (default: all).")
    turns: int = setting(2, ge=2, help="Attempts per problem (K >= 2).")  # self-correction needs a second attempt
    # Part of a run's identity only when not "none": intrinsic runs keep the ids they had before it.
    feedback: str = setting("none", choices=FEEDBACKS,
                            help="Evaluation protocol. none: intrinsic self-correction, every attempt gets another "
                                 "turn with no verifier signal (SCoRe's protocol). oracle: the grader is the "
                                 "verifier, as in RRR: a correct attempt ends the episode, the request after a "
                                 "wrong one says it was wrong.")
    seed: int = shared("seed")
    batch_size: int = shared("batch_size")
    sampling: Sampling = shared("sampling")  # its fields are options too
    dtype: str = shared("dtype")
    device: str = shared("device")
    backend: str = shared("backend")
    data_dir: str | None = shared("data_dir")
    out: str | None = shared("out")
    results_dir: str = shared("results_dir")

    def settings(self) -> dict[str, Any]:
        """Every setting, flat (sampling's at the top level): what config.yaml and the manifest hold.
        `auto_dtype: bfloat16` is added where `--dtype auto` means bf16 on this machine (a GPU, or a CPU with
        native bf16): such a run is not the float32 run of the same settings elsewhere, and is never resumed
        as one; where auto means float32 nothing is added, so those runs keep their ids."""
        found = flatten(asdict(self))
        if self.dtype == "auto":
            from harness.models import auto_bf16, pick_device

            if auto_bf16(pick_device(self.device)):
                found["auto_dtype"] = "bfloat16"
        return found


@dataclass
class EvalConfig(RolloutSettings):
    method: str = "base"
    system_prompt: str | None = None
    correction_instruction: str | None = None
    checkpoint: str | None = None  # a training run folder: evaluate its trained policy
    checkpoint_step: str | None = None  # the checkpoint evaluated (set by validate): another one is another run
    # Which checkpoint: best | last | step-N (None: the trained method's default, Method.checkpoint_select);
    # validate sets checkpoint_step to the one chosen and this to the rule applied.
    checkpoint_select: str | None = None

    def settings(self) -> dict[str, Any]:
        found = super().settings()
        if found.get("checkpoint_select") is None:  # runs of the base model keep their config.yaml
            found.pop("checkpoint_select", None)
        return found

    def identity(self) -> dict[str, Any]:
        found = {k: v for k, v in self.settings().items() if k not in NOT_IDENTITY}
        if found["checkpoint_step"] is None:  # absent, not None: runs of the base model keep their ids
            del found["checkpoint_step"]
        if found["feedback"] == "none":  # absent: intrinsic runs keep the ids they had before --feedback
            del found["feedback"]
        if self.rollout_backend() in ("vllm", "llamacpp"):  # hf runs keep the ids they had before backends
            found["backend"] = self.rollout_backend()
        return found

    def rollout_backend(self) -> str:
        """hf or vllm; auto never picks vllm for a training checkpoint (vllm does not load those yet)."""
        if self.backend == "auto" and self.checkpoint:
            return "hf"
        return resolve_backend(self.backend, self.device, self.model)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        digest = run_hash(self.identity())
        model = Path(self.checkpoint).name if self.checkpoint else Path(self.model).name if "/" in self.model else self.model
        protocol = "" if self.feedback == "none" else f"-{self.feedback}"  # e.g. ...-t2-oracle-<hash>
        return Path(self.results_dir) / "runs" / f"{self.task}-{self.method}-{model}-t{self.turns}{protocol}-{digest}"

    def check_folder(self, hint: str = "choose another --out or delete it") -> None:
        """Refuse (one line) a run folder holding another run, its protocol and what `--dtype auto` meant
        included: identities leave those out where they have their old values (old ids), so a folder of an
        oracle or a bf16 run is checked for them here."""
        store = RunStore(self.run_dir())
        stored = store.check_config(self.identity(), hint)
        if not stored:
            return
        if stored.get("feedback", "none") != self.feedback:
            raise HarnessError(f"{store.root} holds a run with other settings (feedback); {hint}")
        # A run whose `auto` meant bf16 where it started is not continued where auto means float32.
        if stored.get("auto_dtype") != self.settings().get("auto_dtype"):
            raise HarnessError(f"{store.root} holds a run with other settings (auto_dtype: --dtype auto meant "
                               f"{stored.get('auto_dtype') or 'float32'} there); {hint}")

    def adopt_trained_run(self) -> None:
        """With a --checkpoint run: its base model, and its method where none was asked for (`base`), so the
        run is prompted and labelled as the method that trained it."""
        if self.checkpoint is None or not RunStore(self.checkpoint).has_config():
            return
        trained = RunStore(self.checkpoint).read_training_config()
        self.model = trained.get("model", self.model)
        if self.method == "base":
            self.method = trained.get("method", self.method)

    def validate(self) -> None:
        """Every setting, the task and split, the method and the checkpoint folder; writes nothing."""
        check_fields(self, "--")  # set by the CLI options of eval
        check_fields(self.sampling, "--")
        task = get_task(self.task)
        task.check_split(self.split)
        get_method(self.method)  # unknown method: one line
        # vllm asked for but not installed: one line
        if self.rollout_backend() in ("vllm", "llamacpp") and self.checkpoint:
            raise HarnessError(f"--backend {self.rollout_backend()} does not evaluate training checkpoints yet; "
                               "use --backend hf")
        if self.checkpoint_select is not None and not self.checkpoint:
            raise HarnessError("--checkpoint-select needs --checkpoint (a training run folder)")
        if self.checkpoint:
            from harness.checkpoint import check_run_folder, choose_checkpoint, parse_selection
            from harness.method import METHODS

            run = Path(self.checkpoint)
            asked = parse_selection(self.checkpoint_select) if self.checkpoint_select is not None else None
            check_run_folder(run)
            how = asked or METHODS.get(RunStore(run).read_training_config()["method"]).checkpoint_select  # its paper's choice
            folder, self.checkpoint_select = choose_checkpoint(run, how, say_fallback=True)
            if how == "best" and self.checkpoint_select != "best" and asked is not None:
                warn(f"{run}: no intact checkpoint records a training reward (an SFT method, or a run from before "
                     f"rewards were recorded); using the last one, {folder.name}")
            self.checkpoint_step = folder.name
            RunStore(run).read_training_config()  # names its method and model


@dataclass
class EvalResult:
    run_dir: Path
    metrics: TurnMetrics
    generated_now: int  # problems generated in this call (0 when everything came from the store)
    tokens_per_problem: float


def evaluate(config: EvalConfig, progress: Callable[..., Any] | None = None, wait: bool = False) -> EvalResult:
    """Run (or resume) an evaluation; `progress(done=, total=, tokens=, episodes=)` is called as it goes.
    One writer per run folder (RunStore.lock): a second one is refused in one line, or with
    `wait` waits for the first and then finds its problems stored."""
    # Every input is checked (settings, data, stored run, model) before anything is written.
    config.validate()  # a checkpoint folder without a checkpoint fails here, before any work
    task = get_task(config.task)
    method = with_feedback(get_method(config.method, system_prompt=config.system_prompt,
                                      correction_instruction=config.correction_instruction), config.feedback)
    items = task.load(config.split, config.data_dir)[: config.limit]
    if not items:
        raise HarnessError(f"{config.task} {config.split}: no problems to evaluate")
    store = RunStore(config.run_dir())
    config.check_folder()
    with store.lock(wait, on_wait=lambda who: warn(f"{store.root}: waiting for {who}")):
        return _generate(config, task, method, items, store, progress)


def _generate(config: EvalConfig, task, method, items, store: RunStore, progress) -> EvalResult:
    """The problems not yet stored, generated and stored as they complete; then the run's metrics."""
    from harness.grading import GradingPool
    from harness.rollout import run_episodes
    from harness.sampling import SamplingParams
    from harness.rollout.backend import load_for_backend, make_generator

    stored = store.load_samples()
    todo = [item for item in items if item.id not in stored]
    done = episodes_of([stored[item.id] for item in items if item.id in stored], store.root)
    loaded = None
    backend = config.rollout_backend()
    if todo:
        if config.checkpoint:
            from harness.models import load_trained_policy

            loaded = load_trained_policy(Path(config.checkpoint), config.dtype, config.device, config.checkpoint_step)
        else:
            loaded = load_for_backend(backend, config.model, config.dtype, config.device)
    store.write_config(config.settings(), config.identity())
    report = progress or (lambda **_: None)
    report(done=len(done), total=len(items), tokens=0, episodes=done)
    if loaded is not None:
        generator = make_generator(backend, loaded, config.batch_size)
        store.write_manifest(build_manifest(
            config.settings(), config.seed,
            {"spec": config.model, "id": loaded.model_id, "weights_sha256": loaded.weights_sha256,
             "dtype": loaded.dtype, "device": loaded.device, "parameters": model_parameters(loaded, config.model),
             **generator.model_record()},
            local_data_files(config.data_dir, task.data_files(config.split))))
        params = SamplingParams.of(config.sampling, config.seed)
        tokens = [0]

        def count(n: int) -> None:
            tokens[0] += n
            report(done=len(done), total=len(items), tokens=tokens[0], episodes=done)

        def store_episode(episode) -> None:  # each episode is stored as it completes: a kill loses little
            store.append([episode.to_record()])
            done.append(episode)
            report(done=len(done), total=len(items), tokens=tokens[0], episodes=done)

        with GradingPool() as pool:
            run_episodes(task, method, todo, generator, params, config.turns, pool, count, on_episode=store_episode)
        store.order_samples([item.id for item in items])
    position = {item.id: i for i, item in enumerate(items)}
    done.sort(key=lambda e: position[e.item.id])  # the bootstrap depends on row order: keep the problems' order
    overall, scored = score_episodes(done, config.turns)
    store.write_metrics({"task": config.task, "split": config.split, "method": config.method, "model": config.model,
                         "n": len(done), **scored})
    return EvalResult(store.root, overall, len(todo), scored["tokens_per_problem"])
