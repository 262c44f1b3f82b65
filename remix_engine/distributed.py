"""Several training processes (one per GPU; gloo processes on a CPU machine) through `accelerate`.

Every rank runs the same driver: the same seeded data order, the same replay buffer, the same
shuffles. Only the expensive parts are split: each rank generates and grades its share of the
step's prompts (whole groups, so group-relative advantages are computed where the group lives) and
the results are all-gathered; each rank computes log-probs and gradients for its share of every
mini-batch while FSDP2 shards the policy and critic. Because sampling is seeded per prompt (see
`rollout.base.prompt_seed`), the rollouts do not depend on the number of processes, and a
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

    def shard(self, n: int) -> range:
        """The indices of `n` items this rank owns: contiguous, as even as possible."""
        lo = n * self.rank // self.size
        return range(lo, n * (self.rank + 1) // self.size)

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
