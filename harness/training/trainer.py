"""The trainer shared by every trained method: one object that owns the policy, its optimizer and every
trainable module, the data cursor, the token budget and the rollouts. The method names its objective
(harness/training/objective.py); the trainer dispatches on the objective's type.

RL (`RLObjective`): roll out episodes with the core (`objective.rollout`), grade them, compute per-token
log-probs of every attempt in one forward pass (policy and reference), backpropagate `objective.loss`
per micro-batch, then one optimizer step. SFT (`SFTObjective`): collect an iteration's examples
(`objective.collect`), then cross-entropy on their target spans. The trainer owns every trainable
module: the policy and whatever the objective's `setup` declares (one parameter group each), and
averages, clips, steps, checkpoints and restores them all. Both kinds log, checkpoint and resume the
same way (harness/training/loop.py), and run under `accelerate launch`."""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from harness import checkpoint as ckpt
from harness.errors import HarnessError
from harness.lora import attach_lora
from harness.method import Method, get_method
from harness.rollout import run_episodes
from harness.rollout.episode import Episode
from harness.sampling import SamplingParams, rng_for, seed_everything, seed_for
from harness.task import Item, Task, get_task
from harness.training.budget import TokenBudget, problem_chunks
from harness.training.config import TrainConfig
from harness.training import fsdp
from harness.training.losses import truncated_importance_weights
from harness.training.objective import RLBatch, RLObjective, SFTObjective, TrainContext, TrainableModule
from harness.training.policy import reference_mode
from harness.training.policy_rollouts import training_backend
from harness.training.rewards import GraderReward
from harness.training.sequences import TokenLogprobs, build_sequences
from harness.training.sft import RATE_STATS, SFTExample, SFTSchedule, cross_entropy, sft_batch


@dataclass
class Cursor:
    """Where the data stream is: problems are drawn without replacement from a seeded shuffle per epoch."""

    epoch: int = 0
    position: int = 0

    def take(self, n: int, size: int, seed: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            order = list(range(size))
            rng_for(seed, self.epoch).shuffle(order)
            chunk = order[self.position : self.position + n - len(out)]
            out.extend(chunk)
            self.position += len(chunk)
            if self.position >= size:
                self.epoch, self.position = self.epoch + 1, 0
        return out


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, items: list[Item] | None = None):
        from accelerate import Accelerator

        from harness.models import auto_bf16, pick_device

        self.config = config
        self.run_dir = run_dir
        seed_everything(config.seed)  # python, numpy and torch: anything not seeded explicitly still repeats
        device = pick_device(config.device)
        # dtype auto: float32 master weights and optimizer state, bf16 autocast where the device has it.
        bf16 = config.dtype == "auto" and auto_bf16(device)
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if bf16 else "no",
                                       log_with=config.report_to or None, project_dir=str(run_dir))
        self.task: Task = get_task(config.task)
        self.method: Method = get_method(config.method, **config.method_options)  # how attempts are asked for
        if self.method.objective is None:
            raise HarnessError(f"method {config.method!r} is {self.method.kind}: it has nothing to train")
        self.objective: RLObjective | SFTObjective = self.method.objective(self.method)  # what is optimised
        if isinstance(self.objective, SFTObjective) and self.accelerator.num_processes > 1 and config.rollout_tokens:
            raise HarnessError(f"{config.method} on a token budget collects on one process; drop rollout_tokens to "
                               "train it on several")
        self.items = items if items is not None else self.task.load(config.split, config.data_dir)
        loaded = self._load_model(config.model)
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        # The reference policy: the base model. With LoRA it is the same weights with adapters off; full
        # fine-tuning needs a frozen copy (memory: one more model).
        self.reference = None if config.lora.enabled else copy.deepcopy(loaded.model).eval().requires_grad_(False)
        self.policy = attach_lora(loaded.model, config.lora, config.seed)
        if config.gradient_checkpointing:
            from harness.training.policy import enable_gradient_checkpointing

            enable_gradient_checkpointing(self.policy)
        # FSDP (harness/training/fsdp.py): the policy's log-prob module, and a full fine-tune's reference, are
        # sharded over the processes here; under DDP or one process, accelerate wraps the policy below.
        self.sharded = None
        if fsdp.requested(self.accelerator):
            if training_backend(config) != "hf":
                raise HarnessError("FSDP samples with hf rollouts for now (the vllm and llamacpp rollout backends "
                                   "run under DDP or on one process)")
            self.sharded = fsdp.ShardedLogprobs(TokenLogprobs(self.policy), self.accelerator.device)
            if self.reference is not None:
                self.reference = fsdp.ShardedLogprobs(TokenLogprobs(self.reference), self.accelerator.device).root
        from harness.training.policy_rollouts import rollout_generator  # hf: the decode engine over the policy

        self.generator = rollout_generator(config, loaded, self.policy, run_dir, self.accelerator.num_processes)
        self.eos_ids = self.generator.eos_ids()
        self.pool = None  # the grading pool, set by train()
        self._sample_calls = (-1, 0)  # (step, calls in it): each sampling call of a step gets its own seed
        self.context = TrainContext(accelerator=self.accelerator, policy=self.policy, tokenizer=self.tokenizer,
                                    config=config, device=self.accelerator.device, task=self.task,
                                    generator=self.generator, eos_ids=self.eos_ids, sample=self.sample,
                                    load_model=self._load_model)
        # The policy's parameters are those trainable before the objective adds its own modules.
        self.policy_params = {n: p for n, p in self.policy.named_parameters() if p.requires_grad}
        # An objective that restarts each iteration from the base (STaR) needs the freshly initialised
        # trainable weights (the LoRA from the run's seed; under full fine-tuning, the base's weights).
        self.initial_policy = {n: p.detach().clone() for n, p in self.policy_params.items()} \
            if getattr(self.objective, "restart_each_iteration", False) else None
        self.modules: list[TrainableModule] = self.objective.setup(self.context)
        self.module_params = [m.parameters() for m in self.modules]
        # One parameter group per module: the policy's (warmup, weight decay) first, then each declared one.
        groups = [{"params": list(self.policy_params.values())}] + [
            {"params": list(params.values()), "lr": m.lr, "weight_decay": m.weight_decay}
            for m, params in zip(self.modules, self.module_params)]
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        warmup = max(config.warmup_steps, 0)
        schedules = [lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0] + [lambda s: 1.0] * len(self.modules)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
        # DDP wraps the policy only; a declared module's gradients are averaged in `_optimizer_step`.
        if self.sharded is not None:  # already sharded; accelerate would wrap it in DDP on CPUs
            self.logprobs_model, self.optimizer, self.scheduler = self.sharded.root, optimizer, scheduler
        else:
            self.logprobs_model, self.optimizer, self.scheduler = self.accelerator.prepare(
                TokenLogprobs(self.policy), optimizer, scheduler)
        for params in self.module_params:  # trainable from now on, whichever LoRA adapter is active
            for p in params.values():
                p.requires_grad_(True)
        if self.reference is None:
            self.reference_logprobs = self.accelerator.unwrap_model(self.logprobs_model)
        else:
            self.reference_logprobs = self.reference if self.sharded is not None else TokenLogprobs(self.reference)
        self.rewards = GraderReward()
        self.step = 0
        self.cursor = Cursor()
        self.budget = TokenBudget(config.rollout_tokens)  # rollout tokens generated (and the limit, if any)
        self._collect_limit: int | None = None  # tokens an SFT collection may still spend (budgeted runs)
        self._collected: int | None = None  # problems the last budgeted collection sampled
        self.on_collect: Callable[[int, int], None] | None = None  # (tokens spent, share) as a collection goes
        self.window: list[dict[str, Any]] = []  # the log records since the last checkpoint (main process)
        self.sft = SFTSchedule.open(run_dir, self.objective.opts, config.max_steps, config.problems_per_step,
                                    config.seed) if isinstance(self.objective, SFTObjective) else None

    def _load_model(self, spec: str):
        """The policy's model, or another for the objective (a separate critic) loaded the same way."""
        from harness.models import load_model

        return load_model(spec, "float32" if self.config.dtype == "auto" else self.config.dtype,
                          str(self.accelerator.device))

    # ---- data and rollout -------------------------------------------------------------------
    def next_problems(self, count: int | None = None) -> list[Item]:
        """This process's share of the next `count` problems [problems_per_step] (the global list is the
        same everywhere)."""
        indices = self.cursor.take(count or self.config.problems_per_step, len(self.items), self.config.seed)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(indices) % world:
            raise HarnessError(f"problems_per_step ({len(indices)}) must divide over {world} processes")
        share = len(indices) // world
        return [self.items[i] for i in indices[rank * share : (rank + 1) * share]]

    def sample(self, items: list[Item] | None, turns: int, episodes: list[Episode] | None = None) -> list[Episode]:
        """The method's episodes from the current policy (see TrainContext.sample); inside a budgeted SFT
        collection, only as many as its share of the token budget pays for."""
        if self._collect_limit is not None and episodes is None:
            return self._sample_within(items or [], turns, self._collect_limit)
        return self._sample_now(items or [], turns, episodes)

    def _sample_now(self, items: list[Item], turns: int, episodes: list[Episode] | None = None) -> list[Episode]:
        step, calls = self._sample_calls
        calls = calls + 1 if step == self.step else 0
        self._sample_calls = (self.step, calls)
        # Its own seed for each (step, process, call): no two sampling calls of a run share one.
        params = SamplingParams.of(self.config.sampling,
                                   seed_for(self.config.seed, "train", self.step, self.accelerator.process_index, calls))
        self.policy.eval()
        try:
            with self.sharded.gathered() if self.sharded is not None else nullcontext():
                found = run_episodes(self.task, self.method, items, self.generator, params, turns, self.pool,
                                     episodes=episodes)
        finally:
            self.policy.train()
        self.budget.add(found)
        return found

    def _sample_within(self, items: list[Item], turns: int, limit: int) -> list[Episode]:
        """A budgeted collection: a step's worth of problems at a time (each its own sampling call, so
        its own seed) until `limit` tokens are generated; `_collected` says how many problems it took."""
        found: list[Episode] = []
        start, self._collected = self.budget.pending, 0
        for chunk in problem_chunks(items, self.config.problems_per_step):
            if self.budget.pending - start >= limit:
                break
            found.extend(self._sample_now(chunk, turns))
            self._collected += len({item.id for item in chunk})
            if self.on_collect is not None:
                self.on_collect(self.budget.pending - start, limit)
        return found

    def rollout(self, problems: list[Item]) -> list[Episode]:
        return self.objective.rollout(self.context, problems)

    # ---- one update -------------------------------------------------------------------------
    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """Method loss over the episodes (in grad_accum micro-batches by problem), then one step."""
        config = self.config
        if not episodes:  # e.g. RRR when every first attempt was right: nothing to learn from this step
            return self._skip_step()
        sequences = build_sequences(episodes, self.tokenizer.pad_token_id, self.eos_ids, self.objective.masked_steps)
        rewards = self.rewards(episodes)
        keys = [self.objective.group_key(e) for e in episodes]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        groups = torch.tensor([first[key] for key in keys])
        micro = _split_by_group(groups.tolist(), config.grad_accum)
        logs: dict[str, float] = {}
        device = self.accelerator.device
        for rows in micro:
            part = sequences.select(rows).to(device)
            logp, entropy = self._logprobs(self.logprobs_model, part, self.objective.needs_entropy)
            with torch.no_grad(), reference_mode(self.policy):
                ref, _ = self._logprobs(self.reference_logprobs, part, False)
            index = torch.tensor(rows)
            weighed, weight_logs = truncated_importance_weights(logp, part.engine_logp, part.action_masks)
            batch = RLBatch(self.step, [episodes[r] for r in rows], part, rewards[:, index].to(device),
                            groups[index].to(device), logp, ref, entropy, float(config.sampling.max_new_tokens),
                            weighed)
            out = self.objective.loss(batch, self.context)
            out.logs.update(weight_logs)
            self.accelerator.backward(out.loss / len(micro))
            for key, value in out.logs.items():
                logs[key] = logs.get(key, 0.0) + value / len(micro)
        return self._optimizer_step(logs)

    def _optimizer_step(self, logs: dict[str, float]) -> dict[str, float]:
        config = self.config
        if config.max_grad_norm > 0:
            params = list(self.policy_params.values())
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm) if self.sharded is not None \
                else self.accelerator.clip_grad_norm_(params, config.max_grad_norm)
            logs["grad_norm"] = float(fsdp.full_tensor(norm))
        for module, params in zip(self.modules, self.module_params):
            grads = [p for p in params.values() if p.grad is not None]
            if self.accelerator.num_processes > 1:  # outside DDP: average its gradients here
                for p in grads:
                    p.grad = self.accelerator.reduce(p.grad, "mean")
            if module.max_grad_norm > 0 and grads:
                torch.nn.utils.clip_grad_norm_(grads, module.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._policy_changed(logs)
        return logs

    def _policy_changed(self, logs: dict[str, float] | None = None) -> None:
        """A generator that holds its own copy of the policy (vLLM) samples from the new weights from now
        on; it adds what the past rollouts came from (version, log-prob gap) to the step's logs."""
        update = getattr(self.generator, "update_policy", None)
        if update is not None:
            found = update(self.policy, self.step)
            if logs is not None:
                logs.update(found)

    def _skip_step(self) -> dict[str, float]:
        """A step with nothing to learn from: counted (and logged as skipped), weights untouched."""
        self.step += 1
        return {"skipped": 1.0}

    # ---- SFT ---------------------------------------------------------------------------------------
    def sft_examples(self) -> tuple[list, dict[str, float]]:
        """The current iteration's examples: from memory, from its file (a resumed run), or collected now."""
        iteration = self.sft.iteration(self.step)
        if iteration in self.sft.loaded:
            return self.sft.loaded[iteration]
        found = self.sft.read(iteration)
        if found is not None:
            examples, stats, cursor = found
            self.cursor = Cursor(**cursor)  # the data stream continues after what that collection used
        else:
            examples, stats = self._collect(iteration)
            stats = {**stats, "examples": float(len(examples)), "iteration": float(iteration)}
            if self.sft.epochs:
                stats["epoch_steps"] = float(self.sft.epoch_steps(len(examples), self.config.problems_per_step))
            if self.initial_policy is not None:
                stats["restarted_from_base"] = float(iteration > 0)
            if self.accelerator.is_main_process:
                self.sft.save()
                self.sft.write(iteration, examples, stats, asdict(self.cursor), self.tokenizer)
            self.sft.loaded[iteration] = (examples, stats)
        if self.initial_policy is not None and iteration > 0 and self.step == iteration * self.sft.steps_per_iteration:
            self._restart_from_base()  # the data came from the last iteration's policy; the fit starts afresh
        return examples, stats

    def _collect(self, iteration: int) -> tuple[list, dict[str, float]]:
        """The objective's collection for `iteration`: `collect_problems` problems, or on a token budget
        the iteration's share of it (at most `collect_problems` if set, else one pass over the split); the
        data cursor then stands after the problems actually sampled."""
        if not self.budget.limit:  # each process collects from its share of the problems; all get every example
            examples, stats = self.objective.collect(self.context, self.next_problems(self.sft.collect_problems))
            examples, stats = gather_collection(self.accelerator, examples, stats)
            return examples, {**stats, "collected_tokens": float(self.budget.settle(self.accelerator))}
        start = copy.deepcopy(self.cursor)
        problems = self.next_problems(self.objective.opts.collect_problems or len(self.items))
        self._collect_limit = self.budget.share(iteration, self.sft.iterations)
        try:
            examples, stats = self.objective.collect(self.context, problems)
        finally:
            self._collect_limit = None
        used = len(problems) if self._collected is None else self._collected
        self.cursor = start
        self.cursor.take(used, len(self.items), self.config.seed)
        return examples, {**stats, "collected_problems": float(used),
                          "collected_tokens": float(self.budget.settle(self.accelerator))}

    def _restart_from_base(self) -> None:
        """The policy's trainable weights back to their initial values, and a fresh optimizer state."""
        with torch.no_grad():
            for name, value in self.initial_policy.items():
                self.policy_params[name].copy_(value)
        self.optimizer.state.clear()

    def total_steps(self) -> int:
        """max_steps; for an SFT run sized by its data (`epochs`), the steps of its epochs once collected."""
        if self.sft is None or not self.sft.epochs:
            return self.config.max_steps
        count = len(self.sft.loaded[0][0]) if 0 in self.sft.loaded else self.sft.count(0)
        return self.config.max_steps if count is None else self.sft.epoch_steps(count, self.config.problems_per_step)

    def finished(self) -> bool:
        """All steps done, or (RL) the rollout-token budget spent; an SFT run spends it on collections."""
        return self.step >= self.total_steps() or (self.sft is None and self.budget.spent())

    def sft_update(self, examples: list) -> dict[str, float]:
        """Cross-entropy on the examples' target spans only, in grad_accum micro-batches, then one step. Under
        several processes `examples` is this process's share of the step's batch: the loss is the token mean
        over the whole batch (DDP and FSDP average gradients over processes, hence the factor `world`)."""
        world = self.accelerator.num_processes
        local_tokens = float(sum(stop - start for e in examples for start, stop in e.spans))
        count, total_tokens = _summed(self.accelerator, len(examples), local_tokens)
        if count == 0 or total_tokens == 0:  # nothing collected (no wrong->right pair), or only empty targets
            return self._skip_step()
        # Every process runs the same number of passes (DDP and FSDP meet at each backward); one with no
        # example of its own runs a filler row whose loss is weighted 0.
        parts = max(1, min(self.config.grad_accum, int(_largest(self.accelerator, len(examples)))))
        filler = not examples
        sequences = sft_batch(examples or [SFTExample("filler", [self.tokenizer.pad_token_id] * 2, [(1, 2)])],
                              self.tokenizer.pad_token_id)
        rows = list(range(len(examples)))
        micro = [rows[i::parts] for i in range(parts)]
        loss_sum = 0.0
        for chunk in micro:
            weight = 0.0 if filler or not chunk else 1.0
            part = sequences.select(chunk or [0]).to(self.accelerator.device)
            logp, _ = self._logprobs(self.logprobs_model, part, False)
            # Weighted by the chunk's share of target tokens: the sum over chunks is the batch's token mean.
            loss = cross_entropy(logp[0], part.action_masks[0]) * float(part.action_masks.sum()) / total_tokens * weight
            self.accelerator.backward(loss * world)
            loss_sum += float(loss.detach())
        loss_sum = _summed(self.accelerator, loss_sum)[0]
        return self._optimizer_step({"loss": loss_sum, "sft_tokens": total_tokens})

    def _logprobs(self, module, part, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[K, E, T] log-probs for every attempt from ONE forward over the whole sequence."""
        union = part.action_masks.sum(0).clamp(max=1)
        # a prepared (DDP) module autocasts by itself; a sharded one is not prepared
        with self.accelerator.autocast() if self.sharded is not None else nullcontext():
            logp, entropy = module(part.input_ids, part.attention_mask, union, with_entropy)
        k = part.action_masks.shape[0]
        stack = lambda t: torch.stack([t * part.action_masks[a] for a in range(k)])  # noqa: E731
        return stack(logp), (stack(entropy) if entropy is not None else None)

    # ---- state --------------------------------------------------------------------------------
    def stage_ends(self) -> set[int]:
        """Step counts at which a stage (or an SFT iteration) ends: the run checkpoints there."""
        if self.sft is not None:
            return {i * self.sft.steps_per_iteration for i in range(1, self.sft.iterations)}
        return set(self.objective.stage_ends())

    def snapshot(self) -> tuple[dict[str, Any], Cursor]:
        """What a step's rollout changes in memory before its update: the RNG states and the data cursor."""
        return ckpt.rng_state(), copy.deepcopy(self.cursor)

    def restore(self, snapshot: tuple[dict[str, Any], Cursor]) -> None:
        """Undo an abandoned rollout: the state is again the one the step started from."""
        rng, self.cursor = snapshot
        ckpt.set_rng_state(rng)
        self.budget.drop()

    def save(self) -> Path | None:
        """Every process calls it; the main process writes, except under FSDP, where each process first
        writes its shards of the weights and optimizer state into the checkpoint's temp folder."""
        root = self.run_dir / "checkpoints"
        main = self.accelerator.is_main_process
        if self.sharded is not None:
            tmp = ckpt.temp_folder(root, self.step, create=main)  # emptied by the main process only
            self.accelerator.wait_for_everyone()
            fsdp.save_sharded(tmp, self.policy_params, self.optimizer)
            parts = {"optimizer_groups": self.optimizer.state_dict()["param_groups"]}
        else:
            parts = {"weights": ckpt.trainable_state(self.policy_params), "optimizer": self.optimizer.state_dict()}
        if not main:
            return None
        modules = {m.name: ckpt.trainable_state(params) for m, params in zip(self.modules, self.module_params)}
        parts |= {"scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(), "method": modules}
        folder = ckpt.save_checkpoint(root, self.step, parts, written=self.sharded is not None, counters=
                                      {"cursor": asdict(self.cursor), "config": self.config.settings(),
                                       "objective": self.objective.state(), "rollout_tokens": self.budget.generated,
                                       "finished": self.finished(), **self.window_reward()})
        self.window = []
        return folder

    def window_reward(self) -> dict[str, Any]:
        """What a checkpoint records of the steps since the previous one: their mean training reward r1 + r2
        (`--checkpoint-select best` ranks by it) and the first and last step. None for SFT methods: their
        r1/r2 are the iteration's collection samples, drawn before the fit, so they do not rank its checkpoints."""
        steps = [r["step"] for r in self.window]
        reward = None if isinstance(self.objective, SFTObjective) else ckpt.window_reward(self.window)
        return {"train_reward": reward, "reward_window": [steps[0], steps[-1]] if steps else None}

    def load(self, folder: Path) -> None:
        modules = ckpt.load_state(folder, "method")
        if set(modules) != {m.name for m in self.modules}:
            raise HarnessError(f"{folder}: its modules ({', '.join(sorted(modules)) or 'policy only'}) are not the "
                               f"ones {self.config.method} trains; written by another version of the method?")
        with torch.no_grad():
            for module, params in zip(self.modules, self.module_params):
                for name, value in modules[module.name].items():
                    params[name].copy_(value)
        if (folder / "weights.dcp").is_dir():  # written under FSDP: each process reads what it holds
            fsdp.load_sharded(folder, self.policy_params, self.optimizer, ckpt.load_state(folder, "optimizer_groups"))
        else:  # one file: under FSDP each process takes its shard of it
            fsdp.load_full_state(self.policy_params, ckpt.load_state(folder, "weights"))
            optimizer = ckpt.load_state(folder, "optimizer")
            self.optimizer.load_state_dict(fsdp.shard_optimizer_state(self.optimizer, optimizer)
                                           if self.sharded is not None else optimizer)
        self.scheduler.load_state_dict(ckpt.load_state(folder, "scheduler"))
        ckpt.set_rng_state(ckpt.load_state(folder, "rng"))
        state = json.loads((folder / "trainer_state.json").read_text())
        self.step, self.cursor = state["step"], Cursor(**state["cursor"])
        self.budget.generated = int(state.get("rollout_tokens", 0))  # 0 in checkpoints from before the budget
        self.objective.load_state(state.get("objective") or {})
        self._policy_changed()


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


def gather_collection(accelerator, examples: list, stats: dict[str, float]) -> tuple[list, dict[str, float]]:
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
