"""What one training step is, by the kind of objective: `RLSteps` (roll out the step's problems, then a
policy-gradient update on the graded episodes) and `SFTSteps` (an iteration's examples, collected once,
then cross-entropy on the step's batch of them). Each owns its collect, its update, what its passes
processed, and when the run ends and where its stages end; the Trainer (harness/training/trainer.py)
picks one when it is built and `train()` (loop.py) only logs, checkpoints and stops, the same for both.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness.rollout.episode import Episode
from harness.training.losses import truncated_importance_weights
from harness.training.objective import RLBatch
from harness.training.policy import reference_mode
from harness.training.runlog import gather_mean, step_metrics
from harness.training.sequences import build_sequences, sequence_length, summed_over_processes
from harness.training.sft import RATE_STATS, SFTExample, SFTSchedule, cross_entropy, sft_batch


@dataclass
class StepResult:
    """A step's record parts, in log.jsonl's order: what the data was (rewards, collection), what the
    update logged, and the tokens each of its passes processed."""

    stats: dict[str, float]
    logs: dict[str, float]
    passes: dict[str, float]


class RLSteps:
    ranks_checkpoints = True  # a checkpoint's training reward (r1 + r2 of its steps) ranks it for `best`

    def __init__(self, trainer):
        self.trainer = trainer

    def collect(self) -> list[Episode]:
        t = self.trainer
        return t.rollout(t.next_problems())

    def update(self, episodes: list[Episode]) -> StepResult:
        t = self.trainer
        logs = self.loss_step(episodes)
        stats = gather_mean(t.accelerator, {**step_metrics(episodes), **t.objective.rollout_logs()})
        stats["rollout_tokens"] = float(t.budget.settle(t.accelerator))
        return StepResult(stats, logs, self.passes([] if logs.get("skipped") else episodes))

    def loss_step(self, episodes: list[Episode]) -> dict[str, float]:
        """The objective's loss over the episodes (in grad_accum micro-batches by problem), then one step."""
        t = self.trainer
        if not episodes:  # e.g. RRR when every first attempt was right: nothing to learn from this step
            return t.skip_step()
        sequences = build_sequences(episodes, t.tokenizer.pad_token_id, t.eos_ids, t.objective.masked_steps)
        rewards = t.rewards(episodes)
        keys = [t.objective.group_key(e) for e in episodes]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        groups = torch.tensor([first[key] for key in keys])
        micro = _split_by_group(groups.tolist(), t.config.grad_accum)
        logs: dict[str, float] = {}
        device = t.accelerator.device
        for rows in micro:
            part = sequences.select(rows).to(device)
            logp, entropy = t.logprobs(t.logprobs_model, part, t.objective.needs_entropy)
            with torch.no_grad(), reference_mode(t.policy):
                ref, _ = t.logprobs(t.reference_logprobs, part, False)
            index = torch.tensor(rows)
            weighed, weight_logs = truncated_importance_weights(logp, part.engine_logp, part.action_masks)
            batch = RLBatch(t.step, [episodes[r] for r in rows], part, rewards[:, index].to(device),
                            groups[index].to(device), logp, ref, entropy, float(t.config.sampling.max_new_tokens),
                            weighed)
            out = t.objective.loss(batch, t.context)
            out.logs.update(weight_logs)
            t.accelerator.backward(out.loss / len(micro))
            for key, value in out.logs.items():
                logs[key] = logs.get(key, 0.0) + value / len(micro)
        return t.optimizer_step(logs)

    def passes(self, episodes: list[Episode]) -> dict[str, float]:
        """Tokens of the update's passes (see sequences.summed_over_processes): the policy's forward and backward and
        the reference's forward over each episode's whole sequence; a module the objective trains beside
        the policy (a2c2stage's critic) runs over the same sequences when it sits on the policy's base,
        else over the states s1 = [x] and s2 = [x, y1, p] it encodes afresh (and its parameters are named)."""
        from harness.model_size import count_parameters

        t = self.trainer
        policy = float(sum(sequence_length(e, t.objective.masked_steps) for e in episodes))
        found = {"policy_tokens": policy, "reference_tokens": policy}
        for extra in t.modules:
            lm = getattr(extra.module, "lm", None)
            if lm is None:  # on the policy's base: the same sequences
                found["critic_tokens"] = found.get("critic_tokens", 0.0) + policy
            else:
                states = float(sum(len(a.prompt_ids) for e in episodes for a in e.attempts))
                found["critic_tokens"] = found.get("critic_tokens", 0.0) + states
                found["critic_parameters"] = float(count_parameters(lm))
        return summed_over_processes(t.accelerator, found)

    def total_steps(self) -> int:
        return self.trainer.config.max_steps

    def finished(self) -> bool:
        """All steps done or the rollout-token budget spent."""
        t = self.trainer
        return t.step >= self.total_steps() or t.budget.spent()

    def stage_ends(self) -> set[int]:
        return set(self.trainer.objective.stage_ends())


class SFTSteps:
    """An SFT method's steps: iteration i's examples are collected (by the policy as it stands at the
    iteration's first step) once and stored beside the run, then each step fits a batch of them. A
    budgeted run spends its rollout tokens on the collections; an objective with
    `restart_each_iteration` (STaR) fits each iteration from the initial weights."""

    ranks_checkpoints = False  # its r1/r2 are the collection's samples, drawn before the fit

    def __init__(self, trainer):
        t = self.trainer = trainer
        self.schedule = SFTSchedule.open(t.run_dir, t.objective.opts, t.config.max_steps, t.config.problems_per_step,
                                         t.config.seed)
        # The freshly initialised trainable weights (the LoRA from the run's seed; under full fine-tuning,
        # the base's weights), for an objective that restarts each iteration from them.
        self.initial_policy = {n: p.detach().clone() for n, p in t.policy_params.items()} \
            if getattr(t.objective, "restart_each_iteration", False) else None

    def collect(self) -> tuple[list[SFTExample], dict[str, float]]:
        """This process's share of the step's batch, and the iteration's collection statistics."""
        t = self.trainer
        examples, stats = self.examples()
        batch = self.schedule.batch(t.step, examples, t.config.problems_per_step)
        return batch[t.accelerator.process_index :: t.accelerator.num_processes], stats

    def update(self, work: tuple[list[SFTExample], dict[str, float]]) -> StepResult:
        batch, stats = work
        logs = self.fit(batch)
        return StepResult(stats, logs, self.passes([] if logs.get("skipped") else batch))

    def passes(self, examples: list[SFTExample]) -> dict[str, float]:
        """Tokens of the fit's one pass (the policy's forward and backward): each example's prompt and target."""
        found = {"policy_tokens": float(sum(len(example.input_ids) for example in examples))}
        return summed_over_processes(self.trainer.accelerator, found)

    def examples(self) -> tuple[list[SFTExample], dict[str, float]]:
        """The current iteration's examples: from memory, from its file (a resumed run), or collected now."""
        t, schedule = self.trainer, self.schedule
        iteration = schedule.iteration(t.step)
        if iteration in schedule.loaded:
            return schedule.loaded[iteration]
        found = schedule.read(iteration)
        if found is not None:
            examples, stats, cursor = found
            t.cursor = type(t.cursor)(**cursor)  # the data stream continues after what that collection used
        else:
            examples, stats = self._collect(iteration)
            stats = {**stats, "examples": float(len(examples)), "iteration": float(iteration)}
            if schedule.epochs:
                stats["epoch_steps"] = float(schedule.epoch_steps(len(examples), t.config.problems_per_step))
            if self.initial_policy is not None:
                stats["restarted_from_base"] = float(iteration > 0)
            if t.accelerator.is_main_process:
                schedule.save()
                schedule.write(iteration, examples, stats, asdict(t.cursor), t.tokenizer)
            schedule.loaded[iteration] = (examples, stats)
        if self.initial_policy is not None and iteration > 0 and t.step == iteration * schedule.steps_per_iteration:
            self._restart_from_base()  # the data came from the last iteration's policy; the fit starts afresh
        return examples, stats

    def _collect(self, iteration: int) -> tuple[list[SFTExample], dict[str, float]]:
        """The objective's collection for `iteration`: `collect_problems` problems, or on a token budget
        the iteration's share of it (at most `collect_problems` if set, else one pass over the split); the
        data cursor then stands after the problems actually sampled."""
        t = self.trainer
        if not t.budget.limit:  # each process collects from its share of the problems; all get every example
            examples, stats = t.objective.collect(t.context, t.next_problems(self.schedule.collect_problems))
            examples, stats = _gather_collection(t.accelerator, examples, stats)
            return examples, {**stats, "collected_tokens": float(t.budget.settle(t.accelerator))}
        start = copy.deepcopy(t.cursor)
        problems = t.next_problems(t.objective.opts.collect_problems or len(t.items))
        with t.sampling_within(t.budget.share(iteration, self.schedule.iterations)) as collected:
            examples, stats = t.objective.collect(t.context, problems)
        used = len(problems) if collected.problems is None else collected.problems
        t.cursor = start
        t.cursor.take(used, len(t.items), t.config.seed)
        return examples, {**stats, "collected_problems": float(used),
                          "collected_tokens": float(t.budget.settle(t.accelerator))}

    def _restart_from_base(self) -> None:
        """The policy's trainable weights back to their initial values, and a fresh optimizer state."""
        t = self.trainer
        with torch.no_grad():
            for name, value in self.initial_policy.items():
                t.policy_params[name].copy_(value)
        t.optimizer.state.clear()

    def fit(self, examples: list[SFTExample]) -> dict[str, float]:
        """Cross-entropy on the examples' target spans only, in grad_accum micro-batches, then one step. Under
        several processes `examples` is this process's share of the step's batch: the loss is the token mean
        over the whole batch (DDP and FSDP average gradients over processes, hence the factor `world`)."""
        t = self.trainer
        accel = t.accelerator
        world = accel.num_processes
        local_tokens = float(sum(stop - start for e in examples for start, stop in e.spans))
        count, total_tokens = _summed(accel, len(examples), local_tokens)
        if count == 0 or total_tokens == 0:  # nothing collected (no wrong->right pair), or only empty targets
            return t.skip_step()
        # Every process runs the same number of passes (DDP and FSDP meet at each backward); one with no
        # example of its own runs a filler row whose loss is weighted 0.
        parts = max(1, min(t.config.grad_accum, int(_largest(accel, len(examples)))))
        filler = not examples
        sequences = sft_batch(examples or [SFTExample("filler", [t.tokenizer.pad_token_id] * 2, [(1, 2)])],
                              t.tokenizer.pad_token_id)
        rows = list(range(len(examples)))
        micro = [rows[i::parts] for i in range(parts)]
        loss_sum = 0.0
        for chunk in micro:
            weight = 0.0 if filler or not chunk else 1.0
            part = sequences.select(chunk or [0]).to(accel.device)
            logp, _ = t.logprobs(t.logprobs_model, part, False)
            # Weighted by the chunk's share of target tokens: the sum over chunks is the batch's token mean.
            loss = cross_entropy(logp[0], part.action_masks[0]) * float(part.action_masks.sum()) / total_tokens * weight
            accel.backward(loss * world)
            loss_sum += float(loss.detach())
        loss_sum = _summed(accel, loss_sum)[0]
        return t.optimizer_step({"loss": loss_sum, "sft_tokens": total_tokens})

    def total_steps(self) -> int:
        """max_steps; for a run sized by its data (`epochs`), the steps of its epochs once collected."""
        schedule, config = self.schedule, self.trainer.config
        if not schedule.epochs:
            return config.max_steps
        count = len(schedule.loaded[0][0]) if 0 in schedule.loaded else schedule.count(0)
        return config.max_steps if count is None else schedule.epoch_steps(count, config.problems_per_step)

    def finished(self) -> bool:
        """All steps done (a budget is spent on the collections, never ends the fitting)."""
        return self.trainer.step >= self.total_steps()

    def stage_ends(self) -> set[int]:
        """Each iteration's end: the run checkpoints there."""
        return {i * self.schedule.steps_per_iteration for i in range(1, self.schedule.iterations)}


def _summed(accelerator, *values: float) -> list[float]:
    """Each value summed over processes (one process: the values as they are)."""
    if accelerator.num_processes == 1:
        return list(values)
    return accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum").tolist()


def _largest(accelerator, value: float) -> float:
    """The value's largest over processes."""
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.gather(torch.tensor([value], dtype=torch.float64, device=accelerator.device)).max())


def _gather_collection(accelerator, examples: list, stats: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """Every process's collected examples, in process order, on every process; the collection's stats over
    all processes: shares (RATE_STATS) averaged (the processes sampled equally many problems), counts summed."""
    if accelerator.num_processes == 1:
        return examples, stats
    from accelerate.utils import gather_object

    examples = gather_object([examples])
    every = gather_object([stats])
    combined = {k: sum(s[k] for s in every) / (len(every) if k in RATE_STATS else 1) for k in stats}
    return [e for share in examples for e in share], combined


def _split_by_group(groups: list[int], parts: int) -> list[list[int]]:
    """Rows split into `parts` micro-batches without separating a problem's samples."""
    order = list(dict.fromkeys(groups))
    per = max(1, len(order) // parts)
    chunks = [order[i : i + per] for i in range(0, len(order), per)]
    return [[r for r, g in enumerate(groups) if g in set(chunk)] for chunk in chunks]
