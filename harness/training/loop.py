"""A training run from start to end: check the settings against the stored run, load the model and data
(harness/training/trainer.py), restore the last checkpoint, then step until the run's steps are done or
its rollout-token budget is spent, logging each step to log.jsonl and the trackers and checkpointing on
schedule, at stage ends, at the end and on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

from harness import checkpoint as ckpt
from harness.errors import HarnessError, Interrupted, warn
from harness.task import Item
from harness.training.config import TrainConfig
from harness.training.runlog import check_same_data, truncate_log
from harness.training.stopping import StopOnSignal, StopRequested
from harness.training.trainer import Trainer


def train(config: TrainConfig, resume: bool = False,
          progress: Callable[[int, int, dict[str, float]], None] | None = None, items: list[Item] | None = None,
          wait: bool = False) -> Path:
    """Train (or continue) a run; returns its folder. `progress(step, max_steps, logs)` after each step
    (and, while a budgeted SFT collection runs, with {"collected_tokens", "collect_share"} only).

    Every input (settings, stored run, data, model) is checked before anything is written. A run saves a
    checkpoint every `checkpoint_every` steps, at the end of each stage or SFT iteration, at the end, and
    when SIGINT/SIGTERM asks it to stop (see `StopOnSignal`); it then raises `Interrupted`. One process
    trains a run folder at a time (RunStore.lock: a second is refused, or with `wait` waits)."""
    from contextlib import nullcontext

    from harness.store import RunStore

    run_dir = config.run_dir()
    store = RunStore(run_dir)
    # Where a run lives is not a setting: only its identity must match the stored one.
    store.check_config(config.identity(), "a resumed run keeps its settings (only max_steps and rollout_tokens may change)" if resume
                       else "choose another --out or delete it")
    if not resume and ckpt.checkpoints(run_dir):
        raise HarnessError(f"{run_dir} already holds a training run; pass --resume {run_dir} to continue it")
    # The main process holds the folder's lock; the others of a launch write nothing there. (RANK, as
    # torchrun and accelerate launch set it: accelerate's state must not be made before the Trainer's.)
    lock = store.lock(wait, lambda who: warn(f"{run_dir}: waiting for {who}")) \
        if os.environ.get("RANK", "0") == "0" else nullcontext()
    with lock:
        return _train(config, run_dir, store, progress, items)


def _train(config: TrainConfig, run_dir: Path, store, progress, items) -> Path:
    from harness.data import local_data_files
    from harness.grading import GradingPool
    from harness.manifest import build_manifest

    trainer = Trainer(config, run_dir, items)  # loads the data and the model: their errors come before any write
    steps = trainer.steps  # what one step is: RL (rollout, update) or SFT (collection, fit)
    if progress is not None:  # a budgeted SFT collection runs long before its first step: say how far it is
        trainer.on_collect = lambda spent, share: progress(trainer.step, steps.total_steps(),
                                                          {"collected_tokens": spent, "collect_share": share})
    accel = trainer.accelerator
    data_files = local_data_files(config.data_dir, trainer.task.data_files(config.split))
    check_same_data(store, data_files)
    if accel.is_main_process:
        ckpt.clean_temp_folders(run_dir)
        ckpt.latest_checkpoint(run_dir, repair=True)  # damaged newer checkpoints are moved aside, with a warning
    accel.wait_for_everyone()
    found = ckpt.latest_checkpoint(run_dir)
    if found is not None:
        trainer.load(found)
    if accel.is_main_process:
        store.write_config(config.settings(), config.identity())
        store.write_manifest(build_manifest(
            config.settings(), config.seed,
            {"spec": config.model, "id": trainer.loaded.model_id, "weights_sha256": trainer.loaded.weights_sha256,
             **trainer.generator.model_record()},
            data_files))
        truncate_log(store.log_path, trainer.step)
    if config.report_to:
        # A resumed run continues one step axis: TensorBoard hides what an earlier start logged past the
        # checkpoint it restarts from (those steps run again), as log.jsonl is cut back to it.
        purge = {"tensorboard": {"purge_step": trainer.step + 1}} if found is not None else {}
        accel.init_trackers("train", config={k: str(v) for k, v in config.settings().items()}, init_kwargs=purge)
    saved = trainer.step if found is not None else -1
    with GradingPool() as pool, StopOnSignal(abandon=accel.num_processes == 1) as stop:
        trainer.pool = pool
        while not steps.finished():
            before = trainer.snapshot()
            stop.phase = "rollout"  # a signal now abandons the step: nothing of it has touched the weights
            try:
                if stop.signal is not None and stop.abandon:  # it came between two steps
                    raise StopRequested
                start = time.perf_counter()
                work = steps.collect()
                rollout_s = time.perf_counter() - start
                stop.phase = "update"  # from here a signal lets the step finish, then the run saves and stops
            except StopRequested:
                trainer.restore(before)
                break
            except Exception:
                if stop.signal is None:
                    raise
                trainer.restore(before)  # the signal also reached a helper (a grading worker) and broke the rollout
                break
            done = steps.update(work)
            record = {"step": trainer.step, **done.stats, **done.logs, "rollout_s": rollout_s,
                      "rollout_tokens_total": float(trainer.budget.generated), **done.passes,
                      "step_s": time.perf_counter() - start, "lr": trainer.scheduler.get_last_lr()[0]}
            if accel.is_main_process:
                store.append_log([record])
                trainer.window.append(record)
            if config.report_to:
                accel.log(record, step=trainer.step)
            stopping = stop.agreed(accel)
            if stopping or trainer.step % config.checkpoint_every == 0 or steps.finished() \
                    or trainer.step in steps.stage_ends():
                trainer.save()  # every process: under FSDP the state is gathered first
                saved = trainer.step
                accel.wait_for_everyone()
            if progress is not None:
                progress(trainer.step, steps.total_steps(), record)
            if stopping:
                stop.signal = stop.signal or signal.SIGTERM  # another process was asked
                break
        stop.phase = "done"
        interrupted = stop.signal is not None and not steps.finished()
        if interrupted and saved != trainer.step:  # abandoned mid-rollout, or before this start's first checkpoint
            trainer.save()
            accel.wait_for_everyone()
    if config.report_to:
        accel.end_training()
    if interrupted:
        name = signal.Signals(stop.signal).name
        raise Interrupted(f"stopped by {name} after step {trainer.step} of {steps.total_steps()}, checkpoint saved; "
                          f"continue with: harness train --resume {run_dir}", 128 + stop.signal)
    return run_dir
