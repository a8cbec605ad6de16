"""The trainer shared by every trained method: one object that owns the policy, its optimizer and every
trainable module, the data cursor, the token budget and the rollouts. The method names its objective
(harness/training/objective.py); what one step of it is, `RLSteps` or `SFTSteps`
(harness/training/steps.py), is picked here once, from the objective's type.

The trainer gives both kinds what they share: sampling from the current policy (seeded per step,
process and call; a budgeted collection a step's worth of problems at a time), per-token log-probs of
every attempt in one forward pass, the optimizer step (clipping, DDP averaging of declared modules,
scheduler), and checkpoint save and load for the policy and whatever the objective's `setup` declares
(one parameter group each). Both kinds log, checkpoint and resume the same way
(harness/training/loop.py), and run under `accelerate launch`."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager, nullcontext
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
from harness.training.objective import RLObjective, SFTObjective, TrainContext, TrainableModule
from harness.training.policy_rollouts import training_backend
from harness.training.rewards import GraderReward
from harness.training.sequences import TokenLogprobs
from harness.training.steps import RLSteps, SFTSteps


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


@dataclass
class Within:
    """A budgeted collection's limit (tokens) and, once it ran, the problems it sampled."""

    limit: int
    problems: int | None = None


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
        # What a step is (harness/training/steps.py), made before the objective's modules exist: an SFT
        # objective that restarts each iteration (STaR) keeps the policy's freshly initialised weights.
        self.steps = SFTSteps(self) if isinstance(self.objective, SFTObjective) else RLSteps(self)
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
        # DDP wraps the policy only; a declared module's gradients are averaged in `optimizer_step`.
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
        self._within: Within | None = None  # a budgeted collection under way (sampling_within)
        self.on_collect: Callable[[int, int], None] | None = None  # (tokens spent, share) as a collection goes
        self.window: list[dict[str, Any]] = []  # the log records since the last checkpoint (main process)

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
        if self._within is not None and episodes is None:
            return self._sample_within(items or [], turns, self._within)
        return self._sample_now(items or [], turns, episodes)

    @contextmanager
    def sampling_within(self, limit: int):
        """A budgeted collection: inside, `sample` of new problems takes a step's worth of them at a time
        until `limit` tokens are generated; the `Within` it yields then says how many problems it took."""
        self._within = Within(limit)
        try:
            yield self._within
        finally:
            self._within = None

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

    def _sample_within(self, items: list[Item], turns: int, within: Within) -> list[Episode]:
        """A step's worth of problems at a time (each its own sampling call, so its own seed) until the
        collection's limit is spent."""
        found: list[Episode] = []
        start, within.problems = self.budget.pending, 0
        for chunk in problem_chunks(items, self.config.problems_per_step):
            if self.budget.pending - start >= within.limit:
                break
            found.extend(self._sample_now(chunk, turns))
            within.problems += len({item.id for item in chunk})
            if self.on_collect is not None:
                self.on_collect(self.budget.pending - start, within.limit)
        return found

    def rollout(self, problems: list[Item]) -> list[Episode]:
        return self.objective.rollout(self.context, problems)

    # ---- one optimizer step (both kinds) -------------------------------------------------------
    def optimizer_step(self, logs: dict[str, float]) -> dict[str, float]:
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

    def skip_step(self) -> dict[str, float]:
        """A step with nothing to learn from: counted (and logged as skipped), weights untouched."""
        self.step += 1
        return {"skipped": 1.0}

    def logprobs(self, module, part, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[K, E, T] log-probs for every attempt from ONE forward over the whole sequence."""
        union = part.action_masks.sum(0).clamp(max=1)
        # a prepared (DDP) module autocasts by itself; a sharded one is not prepared
        with self.accelerator.autocast() if self.sharded is not None else nullcontext():
            logp, entropy = module(part.input_ids, part.attention_mask, union, with_entropy)
        k = part.action_masks.shape[0]
        stack = lambda t: torch.stack([t * part.action_masks[a] for a in range(k)])  # noqa: E731
        return stack(logp), (stack(entropy) if entropy is not None else None)

    # ---- state --------------------------------------------------------------------------------
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
                                       "finished": self.steps.finished(), **self.window_reward()})
        self.window = []
        return folder

    def window_reward(self) -> dict[str, Any]:
        """What a checkpoint records of the steps since the previous one: their mean training reward r1 + r2
        (`--checkpoint-select best` ranks by it) and the first and last step. None for SFT methods: their
        r1/r2 are the iteration's collection samples, drawn before the fit, so they do not rank its checkpoints."""
        steps = [r["step"] for r in self.window]
        reward = ckpt.window_reward(self.window) if self.steps.ranks_checkpoints else None
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
