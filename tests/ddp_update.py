"""Run by tests/test_ddp.py, once plainly and once under `accelerate launch --num_processes 2` (DDP, or FSDP
with --use_fsdp):
one optimizer update of a method's loss (argv[3]; then --set pairs, e.g. lora.enabled=false) on a fixed
global batch of episodes. Each process takes a
contiguous half of the problems; rank 0 saves the averaged gradients and the updated weights."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import toy_task  # noqa: E402,F401

from harness.training.config import load_train_config  # noqa: E402
from harness.training.fsdp import full_tensor  # noqa: E402
from harness.training.sft import example_from_stream  # noqa: E402
from harness.training.steps import SFTSteps  # noqa: E402
from harness.training.trainer import Trainer  # noqa: E402


def main() -> None:
    episodes_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_train_config("cpu-tiny", None, ["task=toy-digit", "problems_per_step=4", "samples_per_problem=2",
                                                  "max_new_tokens=4", "lr=1e-2", *sys.argv[4:]], {"method": sys.argv[3]})
    trainer = Trainer(config, out_path.parent / "run")
    episodes = pickle.loads(episodes_path.read_bytes())
    problems = list(dict.fromkeys(e.item.id for e in episodes))
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    share = len(problems) // world
    mine = set(problems[rank * share : (rank + 1) * share])
    grads: dict[str, torch.Tensor] = {}
    optimizer_step = trainer.optimizer.step

    def step_recording_grads(*args, **kwargs):  # under FSDP each process holds a shard: gathered (collective)
        grads.update({n: full_tensor(p.grad.detach()).clone() for n, p in trainer.policy.named_parameters()
                      if p.grad is not None})
        return optimizer_step(*args, **kwargs)

    trainer.optimizer.step = step_recording_grads
    if isinstance(trainer.steps, SFTSteps):  # an SFT step: each episode's second attempt as the target after its prompt,
        # this process's share taken as the training loop takes it
        examples = [example_from_stream(e.item.id, list(e.attempts[1].prompt_ids), e.attempts[1], trainer.eos_ids)
                    for e in episodes]
        trainer.steps.fit(examples[rank::world])
    else:
        trainer.steps.loss_step([e for e in episodes if e.item.id in mine])
    weights = {n: full_tensor(p.detach()).cpu().clone() for n, p in trainer.policy_params.items()}
    if trainer.accelerator.is_main_process:
        # The modules an objective declares (a2c2stage's critic adapter and head), stepped by the trainer too.
        weights.update({f"{m.name}.{k}": p.detach().clone() for m, params in zip(trainer.modules, trainer.module_params)
                        for k, p in params.items()})
        save_file({**{f"grad.{k}": v for k, v in grads.items()}, **{f"weight.{k}": v for k, v in weights.items()},
                   "world_size": torch.tensor([world]), "sharded": torch.tensor([int(trainer.sharded is not None)])},
                  str(out_path))
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
