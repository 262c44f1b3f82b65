"""The training loop: rollout → reward → advantage → mix fresh + replayed → m epochs → reincarnate.

Plain GRPO/PPO are the special case of the same loop (replay share 0, one epoch, KL-Convex off,
no reincarnation), so baselines run exactly the code ReMix runs. The math lives in
`algorithms.py`; this module only orchestrates and emits events to a `Sink`.

Versions: the policy that generates at step t is version t (weights before step t's update).
A replayed sample generated at step v and consumed at step t has age t − v.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import random
import shutil
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from remix_engine import algorithms as algo
from remix_engine.alerts import AlertMonitor
from remix_engine.buffer import Group, ReplayBuffer, Sample
from remix_engine.config import RunConfig, load_saved_config, save_config
from remix_engine.critic import ValueModel
from remix_engine.data import Problem, TokenizedProblems, load_problems, tokenize_problems
from remix_engine.distributed import (
    World,
    full_state_dict,
    init_accelerator,
    load_full_state_dict,
    load_optimizer_state,
    optimizer_state,
)
from remix_engine.events import (
    COST_ROLLOUTS,
    COST_TOKENS,
    ELAPSED_S,
    CheckpointRecord,
    RolloutRecord,
    RolloutUseRecord,
    TokenStatsRecord,
)
from remix_engine.logprobs import (
    autocast,
    enable_sharded_forward_response,
    forward_response,
    idle_batch,
    logprob_micro_batches,
    make_token_batch,
    sequence_logprobs,
    token_budget_split,
)
from remix_engine.models import DTYPES, load_policy
from remix_engine.prompts import write_prompt_settings
from remix_engine.reward.behavior import behavior_metrics
from remix_engine.reward.pool import GraderPool
from remix_engine.rollout import RolloutResult, SamplingParams, make_backend
from remix_engine.rollout.base import request_seeds
from remix_engine.rollout.corr import rollout_corr_metrics
from remix_engine.sinks import Sink, StopRequested

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer_state.pt"
MASTER_WEIGHTS_FILE = "master_weights.safetensors"  # fp32 policy weights, when the export is in a lower dtype


@dataclass
class TrainState:
    step: int = 0
    cost_rollouts: int = 0  # responses generated so far (the paper's "cost")
    cost_tokens: int = 0  # response tokens generated so far
    data_epoch: int = 0
    data_pos: int = 0
    elapsed_s: float = 0.0  # training wall time, carried across resumes
    reincarnated_at: int | None = None
    alert_history: dict = field(default_factory=dict)  # the metrics the health alerts watch (alerts.py)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpt_root = Path(output_dir) / "checkpoints"
    if not ckpt_root.is_dir():
        return None
    # A ".tmp" folder is a checkpoint whose write was interrupted: never resume from it.
    done = sorted(p for p in ckpt_root.glob(f"{CHECKPOINT_PREFIX}*")
                  if not p.name.endswith(".tmp") and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def train(cfg: RunConfig | None, output_dir: str | Path, sink: Sink | None = None, resume: bool = False) -> dict:
    """Run (or resume) a training run in `output_dir`; returns the summary dict.

    With `resume=True` and no `cfg`, the config saved in `output_dir/config.yaml` is used.
    """
    output_dir = Path(output_dir)
    if cfg is None:
        cfg_path = output_dir / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no config.yaml in {output_dir}: nothing to resume")
        cfg = load_saved_config(cfg_path)
    sink = sink or Sink()
    try:
        trainer = Trainer(cfg, output_dir, sink)
    except StopRequested as exc:  # stopped during the warm start: nothing trained, nothing to keep
        summary = {"status": "cancelled", "algorithm": cfg.algorithm, "steps": 0, COST_ROLLOUTS: 0, COST_TOKENS: 0,
                   "reason": str(exc), "output_dir": str(output_dir), "checkpoint": None}
        sink.on_end(summary)
        return summary
    try:
        return trainer.run(resume=resume)
    finally:
        trainer.close()


class Trainer:
    def __init__(self, cfg: RunConfig, output_dir: Path, sink: Sink):
        # Several processes (launched by `remix train --nproc N` / torchrun / accelerate launch):
        # every rank runs this same driver; only rank 0 talks to the sink (see distributed.py).
        self.accelerator = init_accelerator()
        self.world = World()
        if cfg.resources.gpus != self.world.size:  # the config records the world size it trained with
            cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"gpus": self.world.size})})
        self.cfg = cfg
        self.out = Path(output_dir)
        self.sink = sink if self.world.is_main else Sink()
        self.state = TrainState()
        self._start_alerts()
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.trainer.torch_threads:
            torch.set_num_threads(cfg.trainer.torch_threads)
        seed = cfg.trainer.seed
        random.seed(seed)
        torch.manual_seed(seed)

        # The trainable policy (and critic) hold fp32 master weights; forward passes run in
        # model.mixed_precision; the anchor/precedent are inference-only copies in model.dtype.
        # Rank 0 loads first, so a warm start is computed and cached once, not raced for.
        if not self.world.is_main:
            self.world.barrier()
        self.model, self.tokenizer = load_policy(cfg.model, cfg.warm_start, seed, task=cfg.data.train,
                                                 should_stop=self.sink.should_abort if self.world.is_main else None,
                                                 log=self._report_phase)
        if self.world.is_main:
            self.world.barrier()
            self.sink.on_phase(None)
        self.device = self.accelerator.device if self.accelerator is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        # The warm start may come from cache (no RNG used) or be computed: reseed so both agree.
        torch.manual_seed(seed + 1)
        self.rng = random.Random(seed)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.data_report: dict[str, dict] = {}  # per split: source, problems, kept, dropped_overlong
        # Every prompt is tokenised here, once: over-long ones are dropped and counted up front.
        train = self._load_prompts("train", cfg.data.train, None, seed)
        if not train.problems:
            raise ValueError(f"data.train: no problem in '{cfg.data.train}' fits data.max_prompt_tokens="
                             f"{cfg.data.max_prompt_tokens} ({train.dropped} too long)")
        self.train_problems = train.problems
        self._train_prompt_ids = {p.id: ids for p, ids in zip(train.problems, train.prompt_ids, strict=True)}
        heldout = self._load_prompts("heldout", cfg.data.heldout, cfg.data.heldout_size, seed)
        self.heldout, self._heldout_prompt_ids = heldout.problems, [list(ids) for ids in heldout.prompt_ids]

        # Copies are made while the policy is still in host memory, so the device never holds a
        # temporary second fp32 copy.
        copy_dtype = DTYPES[cfg.model.dtype]
        self.anchor = InferenceCopy(self.model, copy_dtype, self.device) if cfg.actor.kl_coef > 0 else None
        self.uses_precedent = cfg.is_remix and cfg.remix.kl_convex and cfg.remix.precedent == "previous" and cfg.actor.kl_coef > 0
        self.precedent = InferenceCopy(self.model, copy_dtype, self.device) if self.uses_precedent else None
        # With several processes the policy is sharded, so generation gets its own whole copy
        # (like a vLLM engine's), refreshed from the gathered weights after every update.
        self.generation_copy = InferenceCopy(self.model, copy_dtype, self.device) if self.world.size > 1 else None
        self.critic = ValueModel(self.model) if cfg.family == "ppo" else None
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.actor.lr, weight_decay=cfg.actor.weight_decay)
        if self.critic is not None:
            self.critic.to(self.device)
        self.critic_optimizer = (torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic.lr)
                                 if self.critic is not None else None)
        if self.accelerator is not None:  # FSDP2: each rank keeps 1/N of the weights, gradients and Adam state
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
            enable_sharded_forward_response(self.model)
            if self.critic is not None:
                self.critic, self.critic_optimizer = self.accelerator.prepare(self.critic, self.critic_optimizer)
        self._checkpointed_step: int | None = None
        self._pending_checkpoint: _CheckpointWrite | None = None
        self.buffer = ReplayBuffer(cfg.remix.window)
        sleep = cfg.rollout.vllm_sleep if cfg.rollout.vllm_sleep is not None else self.device.type == "cuda"
        backend_kwargs = {} if cfg.rollout.backend == "hf" else {
            "gpu_memory_utilization": cfg.rollout.vllm_gpu_memory_utilization, "seed": seed,
            "max_model_len": cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
            "dtype": None if self.device.type == "cpu" else cfg.model.dtype,
            "one_per_rank": self.world.size > 1, "sleep": sleep}
        self.backend = make_backend(cfg.rollout.backend, self._generation_module(), self.tokenizer, **backend_kwargs)
        if self.world.size == 1 and hasattr(self.backend, "should_stop"):
            # One process: a cancel may also cut a long generation short (the step in flight is
            # dropped; the run ends at the step before it). Several processes stop between steps.
            self.backend.should_stop = self.sink.should_abort
        self.grader = GraderPool(processes=2, timeout_s=5.0)

    def close(self) -> None:
        self._finish_checkpoint(wait=True, emit=False)  # never leave a half-written checkpoint behind
        self.grader.close()
        self.backend.close()
        if self.accelerator is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _report_phase(self, line: str) -> None:
        """A progress line of a phase outside the steps (the warm start): logged and sent to the sink."""
        logger.info(line)
        self.sink.on_phase(line)

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> dict:
        cfg = self.cfg
        ckpt = latest_checkpoint(self.out) if resume else None
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        elif self.world.is_main:
            save_config(cfg, self.out / "config.yaml")
        self.sink.on_start({"config": cfg.model_dump(mode="json"), "resumed_from": self.state.step if ckpt else None,
                            "data": self.data_report, "world_size": self.world.size,
                            "output_dir": str(self.out)})
        status, abandoned = "completed", False
        last_eval: dict[str, float] = {}
        if ckpt is None:
            try:
                initial = self._evaluate()
            except StopRequested:
                status, abandoned = "cancelled", True
            else:
                initial.update(self._cost_metrics())
                self.sink.on_step(0, initial)
                self.initial_eval = initial

        while not abandoned and self.state.step < cfg.trainer.steps and not self._budget_spent():
            if self.world.broadcast(self.sink.should_stop()):  # rank 0 decides, every rank stops at this step
                status = "cancelled"
                break
            t = self.state.step + 1
            started = time.perf_counter()
            data_position = (self.state.data_epoch, self.state.data_pos)
            try:
                metrics = self._train_step(t)
            except StopRequested:
                # Aborted while generating step t's rollouts, before anything but the data position
                # changed: put it back and the state is step t−1's, checkpointed below as usual.
                self.state.data_epoch, self.state.data_pos = data_position
                status = "cancelled"
                break
            self.state.step = t
            last_step = t == cfg.trainer.steps or self._budget_spent()
            if t % cfg.trainer.eval_every == 0 or last_step:
                try:
                    last_eval = self._evaluate()
                    metrics.update(last_eval)
                except StopRequested:  # the step itself is complete: keep it, without its evaluation
                    status, last_step = "cancelled", True
            self.state.elapsed_s += time.perf_counter() - started
            metrics["timing_s/step"] = time.perf_counter() - started
            metrics[ELAPSED_S] = self.state.elapsed_s
            metrics.update(self._cost_metrics())
            self.sink.on_step(t, metrics)
            for alert in self.alerts.observe(t, metrics):
                self.sink.on_alert(t, alert)
            if t % cfg.trainer.checkpoint_every == 0 or last_step:
                self._save_checkpoint()
            self._finish_checkpoint(wait=False)
            if status == "cancelled":
                break
        self._finish_checkpoint(wait=True)
        if status == "cancelled" and not abandoned and self._checkpointed_step != self.state.step:
            self._save_checkpoint()
            self._finish_checkpoint(wait=True)

        summary = {
            "status": status,
            "algorithm": cfg.algorithm,
            "steps": self.state.step,
            COST_ROLLOUTS: self.state.cost_rollouts,
            COST_TOKENS: self.state.cost_tokens,
            "elapsed_s": round(self.state.elapsed_s, 3),
            "reincarnated_at": self.state.reincarnated_at,
            "final_eval": last_eval,
            "initial_eval": getattr(self, "initial_eval", None),
            "output_dir": str(self.out),
            "checkpoint": str(latest_checkpoint(self.out)) if latest_checkpoint(self.out) else None,
            "data": self.data_report,
            "world_size": self.world.size,
        }
        self.sink.on_end(summary)
        return summary

    def _start_alerts(self) -> None:
        """The health-alert monitor, rebuilt from the (restored) state's history so that a resumed
        run continues the same open alerts."""
        self.alerts = AlertMonitor(self.cfg.alerts.model_dump(), self.state.alert_history)
        self.state.alert_history = self.alerts.history

    def _budget_spent(self) -> bool:
        budget = self.cfg.trainer.max_rollouts
        return budget is not None and self.state.cost_rollouts >= budget

    # ------------------------------------------------------------------ one step
    def _phase(self, t: int) -> tuple[bool, float, int]:
        """(mix-policy phase?, replay share p, UTD m) at step t."""
        rc = self.cfg.remix
        mixing = self.cfg.is_remix and (rc.reincarnate_at is None or t <= rc.reincarnate_at)
        return mixing, (rc.replay_share if mixing else 0.0), (rc.utd if mixing else 1)

    def _train_step(self, t: int) -> dict[str, float]:
        cfg = self.cfg
        metrics: dict[str, float] = {}
        _, share, utd = self._phase(t)
        n_prompts = cfg.rollout.prompts_per_step
        n_fresh = max(1, round((1 - share) * n_prompts))

        # 1. fresh rollouts from the current policy π_t, each rank generating and grading its share
        #    of the prompts (whole groups); every prompt has its own seed, so the samples do not
        #    depend on how the prompts are split
        problems = self._next_problems(n_fresh)
        group_size = cfg.rollout.group_size
        seeds = request_seeds((cfg.trainer.seed << 32) + t, n_fresh, group_size)
        mine = self.world.shard(n_fresh)
        tick = time.perf_counter()
        local = self._generate([list(self._train_prompt_ids[problems[i].id]) for i in mine], SamplingParams(
            n=group_size, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens, prompt_seeds=tuple(seeds[i] for i in mine)))
        self.backend.sleep()  # vLLM sleep mode: its memory is the update's until the next weight sync
        metrics["timing_s/gen"] = time.perf_counter() - tick

        tick = time.perf_counter()
        refs = [problems[i].answer for i in mine for _ in range(group_size)]
        local_grades = self.grader.grade_many(list(zip(local.texts, refs, strict=True)),
                                              require_think=cfg.data.require_think)
        parts = self.world.gather((local, local_grades))
        result = RolloutResult.concat([r for r, _ in parts])
        grades = [g for _, gs in parts for g in gs]
        rewards = torch.tensor([1.0 if g.correct else 0.0 for g in grades])
        metrics["timing_s/reward"] = time.perf_counter() - tick
        fresh_groups = self._make_groups(t, problems, result, rewards)

        # 2. replayed groups from the buffer (whole groups, lag ~ uniform)
        replay_groups = self.buffer.sample_groups(n_prompts - n_fresh, self.rng) if share > 0 else []
        fresh = [s for g in fresh_groups for s in g.samples]
        replayed = [s for g in replay_groups for s in g.samples]
        batch = fresh + replayed

        # 3. log-probs, each in one no-grad pass before the epochs: π_k (current weights, fixed for
        #    all epochs), then the anchor and the precedent (inference copies, brought to the device
        #    only for their pass)
        tick = time.perf_counter()
        prompts = [s.prompt_ids for s in batch]
        responses = [s.response_ids for s in batch]
        old_lp = _pad_rows(self._logprobs(self.model, prompts, responses))
        width = old_lp.shape[1]
        if result.logprobs and result.logprobs[0]:
            engine_lp = _pad_rows([s.behavior_logprobs for s in fresh], width=width)
            metrics.update(rollout_corr_metrics(engine_lp, old_lp[: len(fresh)], _mask_for(fresh, width)))
        if cfg.rollout.behavior_logprobs == "recompute":
            for s, row in zip(fresh, old_lp, strict=False):
                s.behavior_logprobs = row[: len(s.response_ids)].tolist()
        behavior_lp = _pad_rows([s.behavior_logprobs for s in batch], width=width)
        anchor_lp = (_pad_rows(self.anchor.logprobs(self._logprobs, prompts, responses), width)
                     if self.anchor is not None else None)
        lam = self._kl_lambda(t)
        precedent_lp = None
        if self.anchor is not None and lam < 1.0:
            if self.precedent is not None:
                precedent_lp = _pad_rows(self.precedent.logprobs(self._logprobs, prompts, responses), width)
            else:  # precedent = "current": π_k itself, i.e. verl's old_log_prob
                precedent_lp = old_lp
        if self.precedent is not None:  # π_t becomes next step's precedent π_{k−1}
            self.precedent.load_from(self._generation_module())  # the policy, or its whole copy when sharded
        metrics["timing_s/old_log_prob"] = time.perf_counter() - tick

        # 4. advantages per token: group-relative (GRPO family) or critic + GAE (PPO family)
        mask = _mask_for(batch, width)
        old_values = returns = None
        if self.critic is None:
            advantages = algo.broadcast_to_tokens(torch.tensor([s.advantage for s in batch]), mask)
        else:
            advantages, old_values, returns, gae_metrics = self._gae(batch, mask, replayed)
            metrics.update(gae_metrics)

        # 5. m epochs of mini-batch updates (the critic learns on the same mini-batches)
        tick = time.perf_counter()
        update_batch = UpdateBatch(prompts, responses, mask, old_lp, behavior_lp, advantages, anchor_lp, precedent_lp,
                                   old_values, returns)
        if self.device.type == "cuda":  # device-wide use (a sleeping vLLM engine's share included) and the peak
            free, total = torch.cuda.mem_get_info(self.device)
            metrics["perf/gpu_memory_used_gb_before_update"] = (total - free) / 2**30
            torch.cuda.reset_peak_memory_stats(self.device)
        update_metrics, per_sample = self._update(update_batch, lam, utd)
        if self.device.type == "cuda":
            metrics["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        metrics["timing_s/update"] = time.perf_counter() - tick
        metrics["perf/throughput"] = float(mask.sum()) * utd / max(metrics["timing_s/update"], 1e-9)
        metrics.update(update_metrics)
        metrics["timing_s/sync"] = self._sync_generation()

        # 6. bookkeeping: reuse counts, buffer, reincarnation, cost
        for s in replayed:
            s.reuse_count += 1
        self.buffer.push(t, fresh_groups)
        if cfg.is_remix and cfg.remix.reincarnate_at == t:
            self._reincarnate(t)
        self.state.cost_rollouts += len(fresh)
        self.state.cost_tokens += sum(len(s.response_ids) for s in fresh)

        metrics.update(self._rollout_metrics(fresh, result, grades, rewards, fresh_groups))
        metrics.update(self._replay_metrics(t, batch, replayed, per_sample, share, utd, lam))
        self._emit_rollouts(t, problems, fresh, result, grades)
        self._emit_uses(t, batch, per_sample)
        self._emit_token_stats(t, batch, update_batch, per_sample)
        return metrics

    def _gae(self, batch: list[Sample], mask: torch.Tensor, replayed: list[Sample]):
        """Critic values and GAE advantages for the whole mixed batch.

        Replayed samples get advantages from the *current* critic (A^{π_k}, remix_algorithm.md §11.4)
        unless critic.replay_advantages == "stored", which reuses the ones computed at generation.
        """
        cc = self.cfg.critic
        values = self._critic_values([s.prompt_ids for s in batch], [s.response_ids for s in batch], mask.shape[1])
        token_rewards = torch.zeros_like(mask)
        for i, s in enumerate(batch):
            token_rewards[i, len(s.response_ids) - 1] = s.reward  # outcome reward on the last token
        advantages, returns = algo.gae_advantages(token_rewards, values, mask, cc.gamma, cc.lam)
        replayed_ids = {id(s) for s in replayed}
        for i, s in enumerate(batch):
            n = len(s.response_ids)
            if id(s) in replayed_ids:
                if cc.replay_advantages == "stored" and s.token_advantages is not None:
                    advantages[i, :n] = torch.tensor(s.token_advantages)
            else:  # fresh: remember what this step's critic said, for the "stored" mode and the record
                s.token_advantages = advantages[i, :n].tolist()
                s.advantage = float(advantages[i, :n].mean())
        metrics = {
            "critic/values/mean": float(algo.masked_mean(values, mask)),
            "critic/returns/mean": float(algo.masked_mean(returns, mask)),
            "critic/advantages/raw_mean": float(algo.masked_mean(advantages, mask)),
        }
        if cc.whiten_advantages:
            advantages = algo.masked_whiten(advantages, mask)
        return advantages, values, returns, metrics

    @torch.no_grad()
    def _critic_values(self, prompts: list[list[int]], responses: list[list[int]], width: int) -> torch.Tensor:
        """V(s_h) for every response token of the batch, [B, width], in no-grad micro-batches."""
        self.critic.eval()
        values = torch.zeros((len(prompts), width))
        groups, idle = self._shard_micro_batches(prompts, responses, list(range(len(prompts))),
                                                 self.cfg.critic.max_tokens_per_microbatch)
        for group in groups:
            mb = make_token_batch([prompts[i] for i in group], [responses[i] for i in group], self.pad_id)
            with self._autocast():
                v = self.critic(mb.to(self.device)).float().cpu()
            values[group, : v.shape[1]] = v
        for _ in range(idle):
            with self._autocast():
                self.critic(idle_batch(self.pad_id).to(self.device))
        return self.world.sum(values)  # each row was filled by exactly one rank

    def _update(self, batch: UpdateBatch, lam: float, utd: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """m epochs over the mixed batch: shuffle, split into mini-batches (actor.mini_batch_size
        prompts × group size responses), one optimizer step per mini-batch with gradients accumulated
        over token-budget micro-batches. Returns the mean metrics and per-sample ratio statistics."""
        size = len(batch.prompts)
        mini_batch = self.cfg.actor.mini_batch_size * self.cfg.rollout.group_size
        sums: dict[str, float] = defaultdict(float)
        n_updates = 0
        stats_acc: dict[str, torch.Tensor] = {}
        self.model.train()
        for _ in range(utd):
            order = list(range(size))
            self.rng.shuffle(order)
            for lo in range(0, size, mini_batch):
                rows = order[lo: lo + mini_batch]
                m = self._actor_step(batch, rows, lam, stats_acc, utd)
                if self.critic is not None:
                    m.update(self._critic_step(batch, rows))
                for k, v in m.items():
                    sums[k] += float(v)
                n_updates += 1
        if self.world.size > 1:  # each rank filled the statistics of its own rows
            stats_acc = {k: (torch.stack(self.world.gather(v)).amax(0) if k == "ratio_max" else self.world.sum(v))
                         for k, v in stats_acc.items()}
        metrics = {k: v / max(n_updates, 1) for k, v in sums.items()}
        metrics["actor/optimizer_steps"] = float(n_updates)
        metrics["actor/lr"] = self.cfg.actor.lr
        return metrics, stats_acc

    def _micro_batches(self, batch: UpdateBatch, rows: list[int], max_tokens: int | None):
        """(row indices, device token batch, response width) per micro-batch of this rank's share
        of the mini-batch, the number of idle passes it adds to match the busiest rank, and the
        mini-batch's global token and sequence counts, which every micro-batch's loss is normalised
        by so that the accumulated gradient does not depend on the split (into micro-batches or
        across ranks)."""
        counts = batch.mask[rows].sum(dim=1)
        n_tokens, n_seqs = float(counts.sum()), float((counts > 0).sum())
        groups, idle = self._shard_micro_batches(batch.prompts, batch.responses, rows, max_tokens)
        parts = []
        for group in groups:
            mb = make_token_batch([batch.prompts[i] for i in group], [batch.responses[i] for i in group], self.pad_id)
            parts.append((torch.tensor(group), mb.to(self.device), mb.response_ids.shape[1]))
        return parts, idle, max(n_tokens, 1.0), max(n_seqs, 1.0)

    def _shard_micro_batches(self, prompts, responses, rows: list[int], max_tokens: int | None):
        """This rank's micro-batches of `rows` and how many idle passes it must add: with a sharded
        model every forward and backward is a collective, so all ranks run the same number."""
        def plan(rank: int) -> list[list[int]]:
            share = [rows[i] for i in self.world.shard(len(rows), rank)]
            return token_budget_split([len(p) for p in prompts], [len(r) for r in responses], share, max_tokens)

        mine = plan(self.world.rank)
        busiest = max(len(plan(r)) for r in range(self.world.size))
        return mine, busiest - len(mine)

    def _actor_step(self, batch: UpdateBatch, rows: list[int], lam: float, stats_acc: dict, utd: int) -> dict[str, float]:
        cfg = self.cfg.actor
        temp = self.cfg.rollout.temperature
        dev = self.device
        parts, idle, n_tokens, n_seqs = self._micro_batches(batch, rows, cfg.max_tokens_per_microbatch)
        counts = {"global_token_count": n_tokens, "global_seq_count": n_seqs}
        metrics: dict[str, float] = defaultdict(float)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for idx, mb, width in parts:
            def cut(x: torch.Tensor, idx=idx, width=width) -> torch.Tensor:
                return x[idx, :width].to(dev)

            with self._autocast():
                # entropy always: actor/entropy feeds the entropy-collapse alert even without a bonus
                logp, entropy = forward_response(self.model, mb, temp, with_entropy=True)
            old_lp, behavior_lp = cut(batch.old_lp), cut(batch.behavior_lp)
            loss, m = algo.mix_ppg_policy_loss(
                logp, old_lp, behavior_lp, cut(batch.advantages), mb.response_mask,
                clip_eps_low=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, dual_clip_c=cfg.dual_clip_c,
                agg=cfg.loss_agg, **counts)
            if batch.anchor_lp is not None:
                kl_loss, kl_m = algo.kl_convex_loss(
                    logp, cut(batch.anchor_lp), cut(batch.precedent_lp) if batch.precedent_lp is not None else None,
                    lam, mb.response_mask, kind=cfg.kl_estimator, agg=cfg.loss_agg, **counts)
                loss = loss + cfg.kl_coef * kl_loss
                m.update(kl_m)
            ent_loss, ent_m = algo.entropy_bonus_loss(entropy, mb.response_mask, cfg.entropy_coef, cfg.loss_agg,
                                                      **counts)
            if cfg.entropy_coef > 0:
                loss = loss + ent_loss
            m.update(ent_m)
            (loss * self.world.size).backward()  # FSDP averages gradients over ranks; the loss is already global
            total_loss += float(loss.detach())
            _accumulate_metrics(metrics, m, share=float(mb.response_mask.sum()) / n_tokens)
            with torch.no_grad():
                stats = algo.per_sample_ratio_stats(logp.detach(), behavior_lp, old_lp, mb.response_mask,
                                                    cfg.clip_eps, cfg.clip_eps_high)
            _accumulate_ratio_stats(stats_acc, stats, idx, len(batch.prompts), utd)
            if self.cfg.trainer.token_stats_every:  # the token lens: per-token entropy and clip activity
                tokens = {"token_entropy": entropy.detach() / utd,
                          "token_clipped": algo.clipped_tokens(logp, behavior_lp, old_lp, cfg.clip_eps, cfg.clip_eps_high)}
                for key, value in tokens.items():
                    stats_acc.setdefault(key, torch.zeros(batch.mask.shape))[idx, :width] += value.cpu()
        self._idle_backward(self.model, idle, lambda out: forward_response(out, idle_batch(self.pad_id).to(dev), temp)[0])
        metrics["actor/loss"] = total_loss
        metrics = self._reduce_over_ranks(metrics)
        metrics["actor/grad_norm"] = self._clip_grad_norm(self.model, cfg.grad_clip)
        self.optimizer.step()
        return metrics

    def _critic_step(self, batch: UpdateBatch, rows: list[int]) -> dict[str, float]:
        cc = self.cfg.critic
        self.critic.train()
        parts, idle, n_tokens, n_seqs = self._micro_batches(batch, rows, cc.max_tokens_per_microbatch)
        metrics: dict[str, float] = defaultdict(float)
        self.critic_optimizer.zero_grad(set_to_none=True)
        for idx, mb, width in parts:
            with self._autocast():
                values = self.critic(mb).float()
            vf_loss, m = algo.value_loss(values, batch.old_values[idx, :width].to(self.device),
                                         batch.returns[idx, :width].to(self.device), mb.response_mask,
                                         cc.cliprange_value, agg=self.cfg.actor.loss_agg,
                                         global_token_count=n_tokens, global_seq_count=n_seqs)
            (vf_loss * self.world.size).backward()
            _accumulate_metrics(metrics, m, share=float(mb.response_mask.sum()) / n_tokens)
        self._idle_backward(self.critic, idle, lambda critic: critic(idle_batch(self.pad_id).to(self.device)))
        metrics = self._reduce_over_ranks(metrics)
        metrics["critic/grad_norm"] = self._clip_grad_norm(self.critic, self.cfg.actor.grad_clip)
        self.critic_optimizer.step()
        return metrics

    def _idle_backward(self, module: torch.nn.Module, passes: int, forward) -> None:
        """Forward/backward passes that add nothing (loss × 0) but join a sharded model's collectives."""
        for _ in range(passes):
            with self._autocast():
                out = forward(module)
            (out.float().sum() * 0.0).backward()

    def _reduce_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each rank's partial metrics (token-weighted sums, maxima) → the mini-batch's metrics."""
        if self.world.size == 1:
            return dict(metrics)
        total: dict[str, float] = defaultdict(float)
        for part in self.world.gather(dict(metrics)):
            _accumulate_metrics(total, part, share=1.0)
        return dict(total)

    def _clip_grad_norm(self, module: torch.nn.Module, max_norm: float) -> float:
        if self.accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm))
        norm = self.accelerator.clip_grad_norm_(module.parameters(), max_norm)  # the norm over all shards
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _autocast(self):
        return autocast(self.device, self.cfg.model.mixed_precision)

    def _logprobs(self, model, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of the responses under `model` (a no-grad pass in micro-batches).
        With several processes each rank computes its share of the rows and the shares are
        gathered; a sharded model also gets idle passes so every rank runs as many as the busiest."""
        max_tokens = self.cfg.actor.logprob_max_tokens_per_microbatch
        kwargs = {"temperature": self.cfg.rollout.temperature, "pad_id": self.pad_id, "max_tokens": max_tokens,
                  "mixed_precision": self.cfg.model.mixed_precision}
        if self.world.size == 1:
            return sequence_logprobs(model, prompts, responses, **kwargs)

        def share(rank: int) -> list[int]:
            return list(self.world.shard(len(prompts), rank))

        passes = 0
        if model is self.model:  # sharded: its forward passes are collectives
            passes = max(len(logprob_micro_batches([prompts[i] for i in share(r)], [responses[i] for i in share(r)],
                                                   max_tokens)) for r in range(self.world.size))
        mine = share(self.world.rank)
        local = sequence_logprobs(model, [prompts[i] for i in mine], [responses[i] for i in mine],
                                  min_passes=passes, **kwargs)
        return [row for part in self.world.gather(local) for row in part]

    # ------------------------------------------------------------------ generation
    def _generation_module(self) -> torch.nn.Module:
        """The module generation reads: the policy itself, or with several processes (the policy
        being sharded) the whole copy refreshed after every update."""
        return self.generation_copy.module if self.generation_copy is not None else self.model

    def _generating(self):
        """Context of a generation: autocast, and the generation copy brought to the device."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._autocast())
        if self.generation_copy is not None and self.cfg.rollout.backend == "hf":
            stack.enter_context(self.generation_copy.on_device())
        return stack

    def _generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult:
        with self._generating():
            return self.backend.generate(prompt_ids, params)

    def _sync_generation(self) -> float:
        """Give the rollout backend the policy's new weights (waking a sleeping engine first);
        returns seconds spent."""
        tick = time.perf_counter()
        self.backend.wake_up()
        if self.generation_copy is None:
            return time.perf_counter() - tick + self.backend.sync_weights(self.model)
        self.generation_copy.load_state_dict(full_state_dict(self.model))  # a collective: all ranks gather
        return time.perf_counter() - tick + self.backend.sync_weights(self.generation_copy.module)

    # ------------------------------------------------------------------ pieces
    def _kl_lambda(self, t: int) -> float:
        rc = self.cfg.remix
        if not (self.cfg.is_remix and rc.kl_convex):
            return 1.0  # KL-Convex off: plain KL to the anchor
        s = rc.schedule
        return algo.kl_convex_lambda(t, start=s.start, interval=s.interval, decay=s.decay, floor=s.floor)

    def _reincarnate(self, t: int) -> None:
        """Policy reincarnation: the anchor becomes a frozen copy of π_T and the buffer is dropped."""
        if self.anchor is not None:
            self.anchor.load_from(self._generation_module())  # already synced to the new weights
        self.buffer.clear()
        self.state.reincarnated_at = t

    def _make_groups(self, t: int, problems: list[Problem], result, rewards: torch.Tensor) -> list[Group]:
        group_size = self.cfg.rollout.group_size
        group_index = torch.arange(len(result)) // group_size
        adv = self._advantages(rewards, group_index)
        groups = []
        for gi, problem in enumerate(problems):
            gid = f"s{t:06d}-g{gi:03d}"
            group = Group(gid, t)
            for j in range(group_size):
                i = gi * group_size + j
                group.samples.append(Sample(
                    uid=f"{gid}-r{j}", prompt_id=problem.id, group_id=gid, prompt_ids=result.prompt_ids[i],
                    response_ids=result.response_ids[i], behavior_logprobs=result.logprobs[i],
                    reward=float(rewards[i]), advantage=float(adv[i]), policy_version=t, step=t,
                    truncated=result.truncated[i]))
            groups.append(group)
        return groups

    def _advantages(self, rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
        kind = self.cfg.actor.advantage
        if kind == "gae":
            return torch.zeros_like(rewards)  # filled in by _gae once the critic has seen the batch
        if kind == "grpo":
            return algo.grpo_advantages(rewards, group_index)
        if kind == "drgrpo":
            return algo.drgrpo_advantages(rewards, group_index)
        if kind == "rloo":
            return algo.rloo_advantages(rewards, group_index)
        raise ValueError(f"actor.advantage '{kind}' is not available for {self.cfg.algorithm}")

    def _next_problems(self, n: int) -> list[Problem]:
        """Walk the training set in a seeded permutation per epoch (resumable from (epoch, pos))."""
        out = []
        while len(out) < n:
            order = list(range(len(self.train_problems)))
            random.Random(self.cfg.trainer.seed * 1_000_003 + self.state.data_epoch).shuffle(order)
            take = order[self.state.data_pos: self.state.data_pos + n - len(out)]
            out.extend(self.train_problems[i] for i in take)
            self.state.data_pos += len(take)
            if self.state.data_pos >= len(order):
                self.state.data_epoch += 1
                self.state.data_pos = 0
        return out

    def _load_prompts(self, split: str, source: str, limit: int | None, seed: int) -> TokenizedProblems:
        problems = load_problems(source, split=split, limit=limit, seed=seed)
        tokenized = tokenize_problems(self.tokenizer, problems, self.cfg.data, self.cfg.model.use_chat_template)
        self.data_report[split] = tokenized.report(source)  # reaches sinks via on_start and the summary
        return tokenized

    def _evaluate(self) -> dict[str, float]:
        """Greedy pass@1 on the held-out problems (temperature 0, one sample each). With several
        processes rank 0 evaluates (on the whole generation copy, so the numbers are exactly the
        one-process ones) and the others wait for its result."""
        if self.world.size > 1:
            return self.world.broadcast(self._evaluate_here() if self.world.is_main else None)
        return self._evaluate_here()

    def _evaluate_here(self) -> dict[str, float]:
        if not self.heldout:
            return {}
        tick = time.perf_counter()
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.cfg.rollout.max_new_tokens)
        result = self._generate(self._heldout_prompt_ids, params)
        grades = self.grader.grade_many([(txt, p.answer) for txt, p in zip(result.texts, self.heldout, strict=True)],
                                        require_think=self.cfg.data.require_think)
        n = len(grades)
        metrics = {
            "eval/heldout/pass@1": sum(g.correct for g in grades) / n,
            "eval/heldout/format_ok": sum(g.format_ok for g in grades) / n,
            "eval/heldout/response_length": sum(len(r) for r in result.response_ids) / n,
            "eval/heldout/self_reflection_rate": behavior_metrics(result.texts)["behavior/self_reflection_rate"],
            "timing_s/eval": time.perf_counter() - tick,
        }
        if self.cfg.trainer.eval_benchmarks:
            from remix_engine.evaluate import evaluate_policy

            with self._generating():
                metrics.update(evaluate_policy(
                    self._generation_module(), self.tokenizer, self.backend, self.grader,
                    self.cfg.trainer.eval_benchmarks, self.cfg.trainer.eval_benchmark_limit,
                    self.cfg.rollout.max_new_tokens, prompt_template=self._prompt_template(),
                    use_chat_template=self.cfg.model.use_chat_template,
                    max_prompt_tokens=self.cfg.data.max_prompt_tokens))
        return metrics

    def _prompt_template(self) -> str:
        """The prompts of this run as an evaluation template (data.py renders the same text)."""
        return "{problem}" + (self.cfg.data.prompt_suffix or "")

    def _cost_metrics(self) -> dict[str, float]:
        return {COST_ROLLOUTS: float(self.state.cost_rollouts), COST_TOKENS: float(self.state.cost_tokens)}

    def _rollout_metrics(self, fresh, result, grades, rewards, groups) -> dict[str, float]:
        lengths = torch.tensor([float(len(s.response_ids)) for s in fresh])
        zero_std = sum(1 for g in groups if len({s.reward for s in g.samples}) == 1) / max(len(groups), 1)
        m = {
            "critic/score/mean": float(rewards.mean()),
            "critic/score/max": float(rewards.max()),
            "critic/score/min": float(rewards.min()),
            "critic/advantages/mean": sum(s.advantage for s in fresh) / len(fresh),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/min": float(lengths.min()),
            "response_length/clip_ratio": sum(result.truncated) / len(fresh),
            "reward/format_ok": sum(g.format_ok for g in grades) / len(grades),
        }
        if self.cfg.rollout.group_size > 1:
            m["critic/frac_reward_zero_std"] = zero_std
        m.update(behavior_metrics(result.texts))
        return m

    def _replay_metrics(self, t, batch, replayed, per_sample, share, utd, lam) -> dict[str, float]:
        m = {
            "replay/buffer_size": float(len(self.buffer)),
            "replay/fresh_share": (len(batch) - len(replayed)) / len(batch),
            "replay/replayed_samples": float(len(replayed)),
            "replay/target_share": share,
            "replay/utd": float(utd),
            "replay/reincarnated": 1.0 if self.state.reincarnated_at is not None else 0.0,
            "actor/kl_lambda": lam,
        }
        if replayed:
            reuse = [s.reuse_count for s in replayed]
            m["replay/reuse_count_mean"] = sum(reuse) / len(reuse)
            m["replay/reuse_count_max"] = float(max(reuse))
        ages = torch.tensor([t - s.policy_version for s in batch])
        m["replay/age_mean"] = float(ages.float().mean())
        m["replay/age_max"] = float(ages.max())
        for age in sorted(set(ages.tolist())):
            sel = ages == age
            prefix = f"replay/age_{age}"
            m[f"{prefix}/count"] = float(sel.sum())
            m[f"{prefix}/ratio_mean"] = float(per_sample["ratio_mean"][sel].mean())
            m[f"{prefix}/ratio_max"] = float(per_sample["ratio_max"][sel].max())
            m[f"{prefix}/clipfrac"] = float(per_sample["clipfrac"][sel].mean())
            m[f"{prefix}/kl_to_behavior"] = float(per_sample["kl_to_behavior"][sel].mean())
        return m

    def _emit_rollouts(self, t, problems, fresh, result, grades) -> None:
        if not self.cfg.trainer.log_rollouts:
            return
        group_size = self.cfg.rollout.group_size
        rows = []
        for i, (s, g) in enumerate(zip(fresh, grades, strict=True)):
            problem = problems[i // group_size]
            rows.append(RolloutRecord(
                uid=s.uid, step=t, policy_version=s.policy_version, group_id=s.group_id,
                prompt_id=problem.id, prompt=problem.problem, response=result.texts[i],
                extracted=g.extracted, reference=problem.answer, reward=s.reward, correct=g.correct,
                format_ok=g.format_ok, reason=g.reason, length=len(s.response_ids),
                truncated=s.truncated, advantage=s.advantage,
            ))
        self.sink.on_rollouts(t, rows)

    def _emit_uses(self, t, batch, per_sample) -> None:
        if not self.cfg.trainer.log_rollouts:
            return
        rows = [RolloutUseRecord(
            rollout_uid=s.uid, step=t, age=t - s.policy_version,
            ratio_mean=float(per_sample["ratio_mean"][i]), ratio_max=float(per_sample["ratio_max"][i]),
            clipfrac=float(per_sample["clipfrac"][i]), kl_to_behavior=float(per_sample["kl_to_behavior"][i]),
        ) for i, s in enumerate(batch)]
        self.sink.on_rollout_uses(t, rows)

    def _emit_token_stats(self, t, batch: list[Sample], update: UpdateBatch, per_sample) -> None:
        """Per-token statistics of the sampled rollouts in this step's batch (trainer.token_stats_every)."""
        every = self.cfg.trainer.token_stats_every
        if not (self.cfg.trainer.log_rollouts and every):
            return
        rows = []
        for i, s in enumerate(batch):
            if zlib.crc32(s.uid.encode()) % every:
                continue
            n = len(s.response_ids)
            fresh = s.step == t
            rows.append(TokenStatsRecord(
                rollout_uid=s.uid, step=t, age=t - s.policy_version, logprobs=update.old_lp[i, :n].tolist(),
                advantages=update.advantages[i, :n].tolist(), entropy=per_sample["token_entropy"][i, :n].tolist(),
                clipped=[int(c) for c in per_sample["token_clipped"][i, :n].tolist()],
                tokens=self.tokenizer.batch_decode([[tok] for tok in s.response_ids]) if fresh else None,
                behavior_logprobs=list(s.behavior_logprobs) if fresh else None))
        if rows:
            self.sink.on_token_stats(t, rows)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"

    def _save_checkpoint(self) -> None:
        """Checkpoint the run: the policy exported in Hugging Face format (safetensors, in
        model.dtype) plus everything needed for an exact resume (optimizer, buffer, RNGs, copies,
        and the fp32 master weights when the export is in a lower precision).

        With `trainer.async_checkpoint` (default: on an accelerator), tensors are first copied to
        host memory (fast); serialising and writing then happen on a background thread while
        training goes on. The folder appears
        atomically (written as `.tmp`, then renamed) and at most one write is in flight.
        """
        self._finish_checkpoint(wait=True)
        background = self.cfg.trainer.async_checkpoint
        if background is None:
            background = self.device.type != "cpu"
        snapshot = functools.partial(_host_state, copy=background)  # a synchronous write reads CPU tensors in place
        step = self.state.step
        self._checkpointed_step = step
        # Whole (unsharded) state dicts, gathered to rank 0 with several processes: one checkpoint
        # format for every world size, so a run resumes with any number of processes.
        master = snapshot(full_state_dict(self.model, rank0_only=True))
        if getattr(self.model.config, "tie_word_embeddings", False):  # the head is the embedding: store it once
            master.pop("lm_head.weight", None)
        optimizer = snapshot(optimizer_state(self.model, _inner(self.optimizer)))
        critic = critic_optimizer = None
        if self.critic is not None:
            critic = snapshot(full_state_dict(self.critic, rank0_only=True))
            critic_optimizer = snapshot(optimizer_state(self.critic, _inner(self.critic_optimizer)))
        if not self.world.is_main:
            return
        final = self._ckpt_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "policy").mkdir(parents=True)
        export_dtype = DTYPES[self.cfg.model.dtype]
        export = {k: v.to(export_dtype) if v.is_floating_point() else v for k, v in master.items()}
        self.model.config.save_pretrained(tmp / "policy")
        _set_saved_dtype(tmp / "policy" / "config.json", self.cfg.model.dtype)
        if getattr(self.model, "generation_config", None) is not None:
            self.model.generation_config.save_pretrained(tmp / "policy")
        self.tokenizer.save_pretrained(tmp / "policy")
        write_prompt_settings(tmp / "policy", self._prompt_template(), self.cfg.model.use_chat_template)
        tensors = {tmp / "policy" / "model.safetensors": export}
        if export_dtype != torch.float32:
            tensors[tmp / MASTER_WEIGHTS_FILE] = master
        state = {
            "state": asdict(self.state),
            "optimizer": optimizer,
            "buffer": self.buffer.state_dict(),
            "python_rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "anchor": (snapshot(self.anchor.module.state_dict())
                       if self.anchor is not None and self.state.reincarnated_at else None),
            "precedent": snapshot(self.precedent.module.state_dict()) if self.precedent is not None else None,
            "critic": critic,
            "critic_optimizer": critic_optimizer,
            "initial_eval": getattr(self, "initial_eval", None),
        }
        write = _CheckpointWrite(step, tmp, final, tensors, state, self.cfg.trainer.keep_checkpoints)
        if background:
            write.start()
        else:
            write.run()
        self._pending_checkpoint = write

    def _finish_checkpoint(self, wait: bool, emit: bool = True) -> None:
        """Report a finished background write to the sink (waiting for it when `wait`)."""
        write = self._pending_checkpoint
        if write is None or (not wait and write.is_alive()):
            return
        if write.ident is not None:
            write.join()
        self._pending_checkpoint = None
        if write.error is not None:
            raise RuntimeError(f"writing checkpoint {write.final} failed: {write.error}") from write.error
        if emit:
            step, final = write.step, write.final
            self.sink.on_checkpoint(step, str(final), CheckpointRecord(
                step=step, policy_version=step + 1, path=str(final), policy_path=str(final / "policy")))

    def _load_checkpoint(self, path: Path) -> None:
        # map_location="cpu": a checkpoint written on a GPU resumes on a CPU and the reverse;
        # load_state_dict then copies every tensor to where its module or parameter lives.
        blob = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        master_file = path / MASTER_WEIGHTS_FILE
        weights = load_file(master_file if master_file.is_file() else path / "policy" / "model.safetensors")
        missing = load_full_state_dict(self.model, {k: v.float() if v.is_floating_point() else v
                                                    for k, v in weights.items()})
        tied = {k for k in missing if k == "lm_head.weight" and self.model.config.tie_word_embeddings}
        if set(missing) - tied:
            raise RuntimeError(f"checkpoint {path} lacks weights: {sorted(set(missing) - tied)[:5]}")
        load_optimizer_state(self.model, _inner(self.optimizer), blob["optimizer"])
        self.buffer.load_state_dict(blob["buffer"])
        self.rng.setstate(blob["python_rng"])
        torch.set_rng_state(blob["torch_rng"])
        if blob.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        self.state = TrainState(**blob["state"])
        self._start_alerts()
        if blob["anchor"] is not None and self.anchor is not None:
            self.anchor.load_state_dict(blob["anchor"])
        if blob["precedent"] is not None and self.precedent is not None:
            self.precedent.load_state_dict(blob["precedent"])
        if self.critic is not None:
            load_full_state_dict(self.critic, blob["critic"])
            load_optimizer_state(self.critic, _inner(self.critic_optimizer), blob["critic_optimizer"])
        self.initial_eval = blob.get("initial_eval")
        self._checkpointed_step = self.state.step
        self._sync_generation()


# ---------------------------------------------------------------------- pieces of state
@dataclass
class UpdateBatch:
    """A step's mixed batch as the update sees it: token lists, and [B, R] tensors (on the host)
    padded to the longest response of the batch."""

    prompts: list[list[int]]
    responses: list[list[int]]
    mask: torch.Tensor
    old_lp: torch.Tensor  # π_k, fixed for all epochs
    behavior_lp: torch.Tensor  # π_b, the policy that generated each sample
    advantages: torch.Tensor
    anchor_lp: torch.Tensor | None = None
    precedent_lp: torch.Tensor | None = None
    old_values: torch.Tensor | None = None  # PPO: the critic's values before the update
    returns: torch.Tensor | None = None


class InferenceCopy:
    """A frozen copy of the policy that only provides log-probs (the KL anchor, the precedent).

    Stored in model.dtype. On an accelerator it lives in host memory and visits the device only
    for its one no-grad pass per step, so the device holds one extra copy at most during that pass
    and none during the update.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, device: torch.device):
        self.module = copy.deepcopy(model).to(dtype=dtype)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.device = device
        self.offload = device.type != "cpu"

    @contextlib.contextmanager
    def on_device(self):
        """The copy on the device for the duration of the block (back to host memory after)."""
        if self.offload:
            self.module.to(self.device)
        try:
            yield self.module
        finally:
            if self.offload:
                self.module.to("cpu")

    def logprobs(self, compute, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """`compute(module, prompts, responses)` with the copy on the device for the call."""
        with self.on_device():
            return compute(self.module, prompts, responses)

    def load_from(self, model: torch.nn.Module) -> None:
        """Become a copy of `model`'s current weights (cast to this copy's dtype and device)."""
        self.module.load_state_dict(model.state_dict())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


class _CheckpointWrite(threading.Thread):
    """Writes one checkpoint's host tensors and trainer state, renames `.tmp` into place, and
    prunes old checkpoints (keep the last k)."""

    def __init__(self, step: int, tmp: Path, final: Path, tensors: dict[Path, dict], state: dict, keep: int):
        super().__init__(name=f"checkpoint-{step}", daemon=False)
        self.step, self.tmp, self.final, self.tensors, self.state, self.keep = step, tmp, final, tensors, state, keep
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for path, tensors in self.tensors.items():
                save_file(_untie(tensors), path, metadata={"format": "pt"})
            torch.save(self.state, self.tmp / STATE_FILE)
            shutil.rmtree(self.final, ignore_errors=True)
            self.tmp.rename(self.final)
            kept = sorted(p for p in self.final.parent.glob(f"{CHECKPOINT_PREFIX}*") if not p.name.endswith(".tmp"))
            for old in kept[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the training thread
            self.error = exc
        finally:
            self.tensors = self.state = {}  # free the host copies


def _host_state(tree, copy: bool = True, _memo: dict | None = None):
    """A (nested) state dict with its tensors in host memory: cloned when `copy` (so training
    can go on while it is written), else only moved off an accelerator. Tensors that share memory
    (tied embeddings) stay shared."""
    memo = {} if _memo is None else _memo
    if isinstance(tree, torch.Tensor):
        key = (tree.data_ptr(), tree.shape, tree.dtype)
        if key not in memo or tree.numel() == 0:
            memo[key] = tree.detach().to("cpu", copy=copy)
        return memo[key]
    if isinstance(tree, dict):
        return {k: _host_state(v, copy, memo) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_host_state(v, copy, memo) for v in tree)
    return tree


def _inner(optimizer):
    """The torch optimizer inside accelerate's wrapper (the state-dict helpers need the real one)."""
    return getattr(optimizer, "optimizer", optimizer)


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep the first name of each."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        if v.data_ptr() in seen and v.numel() > 0:
            continue
        seen.add(v.data_ptr())
        out[k] = v.contiguous()
    return out


def _set_saved_dtype(config_json: Path, dtype: str) -> None:
    data = json.loads(config_json.read_text())
    data["dtype"] = dtype
    data.pop("torch_dtype", None)
    config_json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _accumulate_metrics(acc: dict[str, float], metrics: dict, share: float) -> None:
    """Fold one micro-batch's (or rank's) metrics into `acc`: maxima (`*_max`) by max, the rest as
    a token-weighted mean (`share` = its tokens / the mini-batch's tokens)."""
    for k, v in metrics.items():
        if k.endswith("_max"):
            acc[k] = max(acc[k], float(v)) if k in acc else float(v)
        else:
            acc[k] = acc.get(k, 0.0) + float(v) * share


def _accumulate_ratio_stats(acc: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], idx: torch.Tensor,
                            size: int, utd: int) -> None:
    """Per-sample ratio statistics over the epochs: max of the maxima, mean of the rest."""
    for k, v in stats.items():
        v = v.cpu()
        if k == "ratio_max":
            a = acc.setdefault(k, torch.full((size,), -math.inf))
            a[idx] = torch.maximum(a[idx], v)
        else:
            a = acc.setdefault(k, torch.zeros(size))
            a[idx] += v / utd


# ---------------------------------------------------------------------- helpers
def _pad_rows(rows: list[list[float]], width: int | None = None) -> torch.Tensor:
    width = width or max(1, max(len(r) for r in rows))
    out = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r[:width])
    return out


def _mask_for(samples: list[Sample], width: int) -> torch.Tensor:
    mask = torch.zeros((len(samples), width))
    for i, s in enumerate(samples):
        mask[i, : len(s.response_ids)] = 1.0
    return mask
