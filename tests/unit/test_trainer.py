"""Trainer invariants: GRPO is ReMix-GRPO with every switch off; resume is exact; events are complete."""

import json

import pytest

from remix_engine.config import build_config
from remix_engine.models import build_toy_tokenizer
from remix_engine.sinks import JsonlSink, Sink
from remix_engine.trainer import latest_checkpoint, train

# A very small run: a few seconds per step on one core.
TINY = {
    "warm_start.steps": 30,
    "rollout.prompts_per_step": 4,
    "rollout.group_size": 4,
    "rollout.max_new_tokens": 24,
    "data.heldout_size": 8,
    "trainer.eval_every": 2,
    "trainer.checkpoint_every": 2,
    "actor.mini_batch_size": 2,  # prompts: 8 responses per optimizer step
}
REMIX_TINY = {**TINY, "remix.reincarnate_at": 3, "remix.schedule.start": 1, "remix.schedule.interval": 1}
VOLATILE = ("timing_s/", "perf/")


def _metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _run(tmp_path, name, algorithm, overrides, steps=4, seed=0):
    cfg = build_config("toy", algorithm, overrides=overrides, steps=steps, seed=seed)
    out = tmp_path / name
    summary = train(cfg, out, JsonlSink(out))
    return out, summary


# PPO samples one response per prompt: give it the same 16 responses per step.
PPO_TINY = {**TINY, "rollout.prompts_per_step": 16, "actor.mini_batch_size": 8}
PPO_REMIX_TINY = {**REMIX_TINY, "rollout.prompts_per_step": 16, "actor.mini_batch_size": 8}
ALL_OFF = {"remix.replay_share": 0.0, "remix.utd": 1, "remix.kl_convex": False, "remix.reincarnate_at": None}


@pytest.mark.parametrize("family, tiny", [("grpo", TINY), ("ppo", PPO_TINY)])
def test_plain_algorithm_is_remix_with_every_component_off(tmp_path, family, tiny):
    plain, _ = _run(tmp_path, "plain", family, tiny)
    remix_off, _ = _run(tmp_path, "remix_off", f"remix-{family}", {**tiny, **ALL_OFF})
    assert _metrics(plain) == _metrics(remix_off)
    assert (plain / "rollouts.jsonl").read_text() == (remix_off / "rollouts.jsonl").read_text()


class StopAfter(JsonlSink):
    def __init__(self, out, steps):
        super().__init__(out)
        self.steps, self.seen = steps, 0

    def on_step(self, step, metrics):
        super().on_step(step, metrics)
        self.seen = step

    def should_stop(self):
        return self.seen >= self.steps


@pytest.mark.parametrize("algorithm, tiny", [("remix-grpo", REMIX_TINY), ("remix-ppo", PPO_REMIX_TINY)])
def test_resume_is_exact(tmp_path, algorithm, tiny):
    straight, _ = _run(tmp_path, "straight", algorithm, tiny)

    cfg = build_config("toy", algorithm, overrides=tiny, steps=4, seed=0)
    out = tmp_path / "resumed"
    first = train(cfg, out, StopAfter(out, 2))
    assert first["status"] == "cancelled" and first["steps"] == 2
    assert latest_checkpoint(out).name == "step_000002"
    # an interrupted later write (a .tmp folder with a state file) is never picked up
    interrupted = out / "checkpoints" / "step_000003.tmp"
    interrupted.mkdir()
    (interrupted / "trainer_state.pt").write_bytes(b"partial")
    assert latest_checkpoint(out).name == "step_000002"
    second = train(None, out, JsonlSink(out, resume_step=2), resume=True)
    assert second["status"] == "completed" and second["steps"] == 4

    assert _metrics(straight) == _metrics(out)
    assert (straight / "rollouts.jsonl").read_text() == (out / "rollouts.jsonl").read_text()
    # health alerts too: the monitor's history is part of the checkpoint (a barely warm-started toy
    # gives all-wrong groups, so the zero-variance alert opens at step 3 and goes on at step 4)
    alerts = (straight / "alerts.jsonl").read_text()
    assert '"rule": "zero_variance_groups"' in alerts and alerts == (out / "alerts.jsonl").read_text()


def test_remix_run_emits_the_documented_metrics_and_artifacts(tmp_path):
    out, summary = _run(tmp_path, "remix", "remix-grpo", REMIX_TINY)
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert "eval/heldout/pass@1" in rows[0] and "eval/heldout/pass@1" in rows[2]
    for key in ("cost/rollouts", "cost/tokens", "critic/score/mean", "actor/pg_loss", "actor/pg_clipfrac",
                "actor/ppo_kl", "actor/entropy", "response_length/mean", "replay/fresh_share",
                "behavior/self_reflection_rate"):
        assert key in rows[1], key
    # Phase 1: 60% of the 4 prompts are fresh (2 prompts x 4 samples); replay appears from step 2.
    assert rows[1]["cost/rollouts"] == 8 and rows[2]["replay/fresh_share"] < 1.0
    assert "replay/age_1/ratio_mean" in rows[2] or "replay/age_1/ratio_mean" in rows[3]
    # Reincarnation at T=3: step 4 is on-policy with a full fresh batch and one epoch.
    assert rows[4]["replay/fresh_share"] == 1.0 and rows[4]["replay/utd"] == 1.0 and rows[4]["replay/reincarnated"] == 1.0
    assert rows[4]["cost/rollouts"] - rows[3]["cost/rollouts"] == 16
    assert summary["reincarnated_at"] == 3
    # KL-Convex: λ falls below 1 once the schedule starts.
    assert rows[3]["actor/kl_lambda"] < 1.0 and "actor/kl_precedent" in rows[3]

    uses = [json.loads(x) for x in (out / "rollout_uses.jsonl").read_text().splitlines()]
    assert any(u["age"] > 0 for u in uses)
    rollouts = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len({r["uid"] for r in rollouts}) == len(rollouts) == summary["cost/rollouts"]
    used_uids = {u["rollout_uid"] for u in uses}
    assert used_uids <= {r["uid"] for r in rollouts}

    # the token lens (trainer.token_stats_every = 1: every rollout): one record per use; the fresh
    # use carries the tokens (they spell the response) and the behaviour log-probs, which with
    # behavior_logprobs=recompute are π_k's own at that step
    stats = [json.loads(x) for x in (out / "token_stats.jsonl").read_text().splitlines()]
    assert sorted((t["rollout_uid"], t["step"]) for t in stats) == sorted((u["rollout_uid"], u["step"]) for u in uses)
    by_uid = {r["uid"]: r for r in rollouts}
    special = set(build_toy_tokenizer().all_special_tokens)  # the stored response text skips them
    for t in stats:
        n = by_uid[t["rollout_uid"]]["length"]
        assert len(t["logprobs"]) == len(t["advantages"]) == len(t["entropy"]) == len(t["clipped"]) == n
        if t["age"] == 0:
            text = "".join(tok for tok in t["tokens"] if tok not in special)
            assert text == by_uid[t["rollout_uid"]]["response"] and t["logprobs"] == t["behavior_logprobs"]
        else:
            assert t["tokens"] is None and t["behavior_logprobs"] is None
    assert any(t["age"] > 0 for t in stats)

    ckpt = latest_checkpoint(out)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ckpt / "policy") is not None


def test_cancel_before_first_step_writes_a_checkpoint(tmp_path):
    class StopNow(Sink):
        def should_stop(self):
            return True

    cfg = build_config("toy", "grpo", overrides=TINY, steps=3)
    summary = train(cfg, tmp_path / "c", StopNow())
    assert summary["status"] == "cancelled" and summary["steps"] == 0
    assert latest_checkpoint(tmp_path / "c") is not None


def test_resume_without_a_run_directory_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        train(None, tmp_path / "nothing", resume=True)


def test_ppo_trains_a_critic_and_records_value_metrics(tmp_path):
    out, _ = _run(tmp_path, "ppo", "remix-ppo", {**PPO_REMIX_TINY, "critic.replay_advantages": "stored"}, steps=3)
    rows = _metrics(out)
    for key in ("critic/vf_loss", "critic/values/mean", "critic/returns/mean", "actor/pg_loss"):
        assert key in rows[2], key
    assert rows[1]["critic/values/mean"] == 0.0  # the zero-initialised head starts at V = 0


def test_critic_regresses_towards_the_returns():
    import torch

    from remix_engine import algorithms as algo
    from remix_engine.critic import ValueModel
    from remix_engine.logprobs import make_token_batch
    from remix_engine.models import build_toy_model, build_toy_tokenizer

    tok = build_toy_tokenizer()
    critic = ValueModel(build_toy_model(tok, seed=0))
    batch = make_token_batch([[5, 6, 7], [5, 8]], [[9, 10, 11], [12]], pad_id=tok.pad_token_id)
    returns = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]) * batch.response_mask
    opt = torch.optim.AdamW(critic.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        values = critic(batch)
        loss, _ = algo.value_loss(values, values.detach(), returns, batch.response_mask, cliprange_value=10.0)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * first


def test_rollout_budget_stops_the_run_early(tmp_path):
    out, summary = _run(tmp_path, "budget", "grpo", {**TINY, "trainer.max_rollouts": 20}, steps=10)
    # 16 rollouts per step: the budget of 20 is spent after step 2
    assert summary["steps"] == 2 and summary["cost/rollouts"] == 32
    assert "eval/heldout/pass@1" in _metrics(out)[-1]


def test_scheduled_benchmark_evaluation_logs_real_benchmark_accuracy(tmp_path):
    out, _ = _run(tmp_path, "bench", "grpo", {**TINY, "trainer.eval_benchmarks": ["aime24", "amc23"],
                                              "trainer.eval_benchmark_limit": 2}, steps=2)
    rows = _metrics(out)
    for step in (0, 2):
        assert {"eval/aime24/pass@1", "eval/amc23/pass@1", "eval/average/pass@1"} <= set(rows[step]), step
    assert "eval/aime24/pass@1" not in rows[1]


def test_over_long_prompts_are_dropped_at_load_time_and_reported(tmp_path):
    rows = [{"id": f"short-{i}", "problem": f"Compute {i}+{i}.", "answer": str(2 * i)} for i in range(1, 9)]
    rows.insert(3, {"id": "long", "problem": "Compute " + "+".join(["1"] * 40) + ".", "answer": "40"})
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    overrides = {**TINY, "data.train": str(path), "data.max_prompt_tokens": 48}
    out, summary = _run(tmp_path, "run", "grpo", overrides, steps=2)
    assert summary["status"] == "completed"
    assert summary["data"]["train"] == {"source": str(path), "problems": 9, "kept": 8, "dropped_overlong": 1}
    assert summary["data"]["heldout"]["dropped_overlong"] == 0
    trained = {json.loads(line)["prompt_id"] for line in (out / "rollouts.jsonl").read_text().splitlines()}
    assert trained and "long" not in trained  # 2 steps x 4 prompts cover all 8 kept problems
    with pytest.raises(ValueError, match=r"no problem in .* fits data.max_prompt_tokens=5 \(9 too long\)"):
        _run(tmp_path, "none", "grpo", {**overrides, "data.max_prompt_tokens": 5}, steps=1)


class _AbortAfter(Sink):
    """Asks to abort (a cancel) once `steps` steps have been emitted."""

    def __init__(self, steps: int):
        self.steps, self.seen = steps, []

    def on_step(self, step, metrics):
        self.seen.append(step)

    def should_abort(self):
        return len(self.seen) > self.steps


def test_a_cancel_cuts_a_generation_short_and_keeps_the_last_checkpoint(tmp_path):
    """should_abort is polled during generation: the step in flight is dropped and the run ends
    cancelled at the step before it, checkpointed there (not at a half-done step)."""
    cfg = build_config("toy", "remix-grpo", overrides={**TINY, "trainer.checkpoint_every": 5}, steps=6)
    sink = _AbortAfter(steps=2)  # step 0 (initial eval), 1 and 2 emitted, then step 3's generation aborts
    summary = train(cfg, tmp_path / "run", sink)
    assert summary["status"] == "cancelled" and summary["steps"] == 2 and sink.seen == [0, 1, 2]
    assert latest_checkpoint(tmp_path / "run").name == "step_000002"


def test_a_cancel_during_the_warm_start_stops_it_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = build_config("toy", "grpo", overrides={**TINY, "warm_start.steps": 10_000}, steps=2)
    summary = train(cfg, tmp_path / "run", _AbortAfter(steps=-1))
    assert summary["status"] == "cancelled" and summary["steps"] == 0 and "warm start" in summary["reason"]
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
