"""Several training processes (one per GPU; gloo processes on a CPU machine) through `accelerate`.

Every rank runs the same driver: the same seeded data order, the same replay buffer, the same
shuffles. Only the expensive parts are split: each rank generates and grades its share of the
step's prompts (whole groups, so group-relative advantages are computed where the group lives) and
the results are all-gathered; each rank computes log-probs and gradients for its share of every
mini-batch while FSDP2 shards the policy and critic. Because sampling is seeded per prompt (see
`SamplingParams.prompt_seeds`), the rollouts do not depend on the number of processes, and a
2-process run reproduces the 1-process run up to float summation order.

Launch: `remix train --nproc N` re-executes itself under `torch.distributed.run` (the launcher
`accelerate launch` also uses); `accelerate launch --config_file docs/accelerate/fsdp2.yaml -m
remix_engine.cli train ...` is the same thing with an accelerate config file.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def env_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched distributed)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(nproc: int, argv: Sequence[str], port: int | None = None) -> list[str]:
    """The command line that runs `python <argv>` in `nproc` processes on this node.

    `argv` starts with `-m module` or a script path. The launcher exits non-zero as soon as one
    process fails (it stops the others: no restarts here; the caller resumes from the last
    checkpoint)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()), "--max-restarts", "0",
            *argv]


class World:
    """Rank, size and the few collectives the trainer needs. `World()` outside a launcher is the
    one-process world, where every collective is the identity."""

    def __init__(self):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.size = dist.get_world_size() if dist.is_initialized() else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int, rank: int | None = None) -> range:
        """The indices of `n` items a rank (default: this one) owns: contiguous, as even as possible."""
        r = self.rank if rank is None else rank
        return range(n * r // self.size, n * (r + 1) // self.size)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return values
        out = values.clone()
        dist.all_reduce(out)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_accelerator(timeout_s: float = 7200.0):
    """Join the launcher's process group through accelerate with FSDP2; None in a one-process run.

    accelerate enables FSDP only on accelerators and falls back to DDP on CPU; FSDP2 itself runs on
    CPU over gloo, so there we switch the state to FSDP: a CPU run then exercises the very sharding
    code a GPU run uses. Layers are wrapped by the model's `_no_split_modules` (its decoder layer).
    The long timeout covers rank 0 evaluating while the others wait."""
    if env_world_size() == 1:
        return None
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
                                            cpu_ram_efficient_loading=False)
    accelerator = Accelerator(fsdp_plugin=plugin, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))])
    if accelerator.state.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    return accelerator


def full_state_dict(model: torch.nn.Module, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of a possibly FSDP-sharded model: gathered on every rank,
    or, with `rank0_only`, in host memory on rank 0 (empty elsewhere), as checkpoints need."""
    if not dist.is_initialized():
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=rank0_only))


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a whole state dict (every rank holds it) into a possibly sharded model; returns the
    missing keys (a tied lm_head is expected to be missing)."""
    if not dist.is_initialized():
        return list(model.load_state_dict(state, strict=False).missing_keys)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return list(set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
                .missing_keys)


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter names (not positions), on rank 0: the same
    format whatever the number of processes, so a checkpoint resumes at any world size."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=dist.is_initialized()))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if state.get("state") and all(isinstance(k, int) for k in state["state"]):  # written before names were used
        if dist.is_initialized():
            raise RuntimeError("this checkpoint's optimizer state predates multi-process runs: resume it with one process")
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
