"""Fully sharded data parallel for the trainer: PyTorch's FSDP2 (`fully_shard`) over the processes that
`accelerate launch` started, asked for with an accelerate FSDP config (configs/accelerate/fsdp*.yaml).

Why the harness applies `fully_shard` itself rather than through `accelerator.prepare`: accelerate (1.16)
turns FSDP on only for GPU distributed types, so on CPUs an FSDP config would silently run DDP; and the
trainer needs two things accelerate does not do: the log-prob module (`TokenLogprobs`, whose forward is
every training pass's entry point) is the FSDP root, and rollouts run on unsharded weights.

- Sharding: every decoder layer (the model's `_no_split_modules`) is one FSDP unit; the root unit holds the
  rest (embeddings, final norm, LM head, tied or not). LoRA adapters live inside the layers' projections,
  so they are sharded with their layer; the frozen base is sharded the same way. Gradients are
  reduce-scattered as averages over the processes: the same update as DDP on the same global batch.
- Rollouts (`gathered`): each process samples its own problems, so sequences end at different steps on
  different processes; a sharded forward would all-gather at every layer and deadlock. The weights are
  gathered once before sampling and stay whole until it ends (memory: one full copy while sampling).
- Checkpoints (`save_sharded`, `load_sharded`): each process writes its own shards of the trainable weights
  and of the optimizer's moments with torch.distributed.checkpoint (DCP, what accelerate's `save_state`
  runs for FSDP's sharded state dicts) into the checkpoint's temp folder (`weights.dcp/`, `optimizer.dcp/`);
  the main process adds the small parts (scheduler, RNG, counters) and renames the folder into place, so a
  killed save never looks complete and no process ever holds a full copy of a 7B model's state. DCP
  reshards on load: a checkpoint resumes under any number of processes, FSDP or not, and `harness eval
  --checkpoint` reads its weights whole (`harness.checkpoint.load_weights`). A one-process checkpoint
  (`weights.safetensors`) resumes under FSDP too: each process takes its shard (`load_full_state`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


def requested(accelerator) -> bool:
    """Whether this run is launched with FSDP: accelerate's FSDP distributed type (GPUs), or its launcher's
    FSDP flag on CPUs (which accelerate itself would run as DDP), with more than one process."""
    from accelerate.utils import DistributedType

    flag = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    return accelerator.num_processes > 1 and (accelerator.distributed_type == DistributedType.FSDP or flag)


@cache
def _mesh(device_type: str, processes: int):
    """One device mesh over all processes, shared by the policy and a full fine-tune's reference."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (processes,))


class ShardedLogprobs:
    """A `TokenLogprobs` over a causal LM, sharded with FSDP2 over all processes (see the module's note)."""

    def __init__(self, logprobs: nn.Module, device: torch.device):
        from torch.distributed.fsdp import FSDPModule, fully_shard

        lm = logprobs.lm
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        units = set(getattr(base, "_no_split_modules", None) or [])
        layers = [m for m in logprobs.modules() if type(m).__name__ in units]
        if not layers:
            from harness.errors import HarnessError

            raise HarnessError(f"FSDP: {type(base).__name__} names no decoder layer class (_no_split_modules)")
        mesh = _mesh(device.type, torch.distributed.get_world_size())
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(logprobs, mesh=mesh)
        self.root = logprobs
        self.units = [m for m in logprobs.modules() if isinstance(m, FSDPModule)]
        # FSDP2 takes as root the first unit whose forward runs: a rollout calls the layers directly, so
        # the root's forward must come first (every process runs this, with the same shapes).
        one = torch.ones(1, 2, dtype=torch.long, device=device)
        with torch.no_grad():
            logprobs(one, one, one)
        # The root keeps its weights whole after a forward (FSDP2's default for the root): shard them again, so
        # that the parameters the optimizer and checkpoints take from the model are the sharded ones.
        for unit in self.units:
            unit.reshard()

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Whole weights on every process until the block ends (a collective: every process enters)."""
        self.root.set_reshard_after_forward(False)
        for unit in self.units:
            unit.unshard()
        try:
            yield
        finally:
            self.root.set_reshard_after_forward(True)
            for unit in self.units:
                unit.reshard()


def is_sharded(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (an all-gather for a shard: every process must call it)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def save_sharded(folder: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """This process's shards of the trainable weights and the optimizer's moments into `folder` (DCP; a
    collective: every process calls it with the same folder). Replicated tensors (a step count, an
    unsharded module's moments) are written once. The optimizer's param groups hold no tensors: they go
    with the main process's parts."""
    import torch.distributed.checkpoint as dcp

    dcp.save({name: p.detach() for name, p in params.items()}, checkpoint_id=folder / "weights.dcp")
    dcp.save({str(index): dict(entry) for index, entry in optimizer.state_dict()["state"].items()},
             checkpoint_id=folder / "optimizer.dcp")


def load_sharded(folder: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                 groups: list[dict[str, Any]]) -> None:
    """Weights and optimizer state from a checkpoint `save_sharded` wrote, each process reading the part
    its parameters hold (a DTensor its shard, a plain tensor the whole): any process count resumes it."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from harness.checkpoint import read_sharded, sharded_metadata

    read_sharded({name: p.detach() for name, p in params.items()}, folder / "weights.dcp")  # in place, no copy
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, meta in sharded_metadata(folder / "optimizer.dcp").items():
        index, field = key.split(".", 1)
        if not isinstance(meta, TensorStorageMetadata):
            raise ValueError(f"{folder / 'optimizer.dcp'}: {key} is no tensor")
        param = flat[int(index)]  # a moment has its parameter's shape and layout; a step count is a scalar
        like_param = tuple(meta.size) == tuple(param.shape)
        state.setdefault(index, {})[field] = torch.zeros_like(param.detach(), dtype=meta.properties.dtype) \
            if like_param else torch.zeros(tuple(meta.size), dtype=meta.properties.dtype)
    read_sharded(state, folder / "optimizer.dcp")
    optimizer.load_state_dict({"state": {int(i): entry for i, entry in state.items()}, "param_groups": groups})


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This process's shard of `full`, laid out as `like` (a DTensor parameter); `full` as is otherwise."""
    if not is_sharded(like):
        return full.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)


def load_full_state(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(shard_like(value, params[name]))


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A full optimizer state dict laid out like the optimizer's parameters (each moment as its shard)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state["state"] = {index: {k: shard_like(v, params[int(index)]) if torch.is_tensor(v) and v.dim() > 0 else v
                              for k, v in entry.items()}
                      for index, entry in state["state"].items()}
    return state
