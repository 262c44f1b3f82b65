"""The `remix` console script as a user runs it: exit codes, one-line errors, run directory layout."""

import json
import subprocess
import sys

import pytest

TINY = ["--set", "warm_start.steps=30", "--set", "rollout.prompts_per_step=4", "--set", "rollout.group_size=4",
        "--set", "rollout.max_new_tokens=24", "--set", "data.heldout_size=8", "--set", "trainer.eval_every=2",
        "--set", "trainer.checkpoint_every=2", "--set", "actor.mini_batch_size=2"]


def remix(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "remix_engine.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.parametrize("args, needle", [
    (["train", "--algorithm", "nope"], "--algorithm"),
    (["train", "--set", "remix.utd=0"], "remix.utd"),
    (["train", "--set", "remix.window"], "key=value"),
    (["train", "--preset", "gpt-9"], "preset"),
    (["train", "--config", "/nonexistent.yaml"], "not found"),
    (["train", "--resume", "/nonexistent-run"], "--resume"),
    (["frobnicate"], "invalid choice"),
    (["studio", "--api-workers", "0"], "--api-workers: must be at least 1"),
    (["studio", "--api-workers", "two"], "--api-workers: must be a whole number"),
    ([], "choose a command"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle):
    done = remix(*args)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("remix: error:") and needle in lines[0], done.stderr


def test_train_then_resume_writes_the_documented_files(tmp_path):
    out = tmp_path / "run"
    done = remix("train", "--preset", "toy", "--algorithm", "remix-grpo", "--steps", "2", "--seed", "0",
                 "--output", str(out), *TINY)
    assert done.returncode == 0, done.stderr
    assert "completed: 2 steps" in done.stdout
    for name in ("config.yaml", "metrics.jsonl", "rollouts.jsonl", "rollout_uses.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    policy = out / "checkpoints" / "step_000002" / "policy"
    assert (policy / "config.json").is_file() and (out / "checkpoints" / "step_000002" / "trainer_state.pt").is_file()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]

    # raise the step budget in the saved config, then resume: steps 3..4 are appended, none repeated
    cfg = (out / "config.yaml").read_text().replace("steps: 2\n", "steps: 4\n", 1)
    (out / "config.yaml").write_text(cfg)
    done = remix("train", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4]


def test_paper_preset_trains_a_local_model_on_a_json_array(tmp_path):
    """The r1-distill-1.5b preset's precision and batch settings (fp32 masters under bf16 compute,
    lr 1e-6, mini-batches in prompts, token budgets) on a small local checkpoint and a
    DeepScaleR-shaped JSON array: every weight matrix moves and the export is bf16."""
    import torch
    from safetensors.torch import load_file

    from remix_engine.data import load_problems
    from remix_engine.models import build_toy_model, build_toy_tokenizer

    tok = build_toy_tokenizer()
    build_toy_model(tok, seed=3).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = [{"problem": p.problem, "answer": p.answer} for p in load_problems("toy", limit=16)]
    (tmp_path / "problems.json").write_text(json.dumps(rows))
    out = tmp_path / "run"
    done = remix("train", "--preset", "r1-distill-1.5b", "--steps", "2", "--output", str(out),
                 "--set", f"model.name_or_path={tmp_path / 'model'}", "--set", f"data.train={tmp_path / 'problems.json'}",
                 "--set", f"data.heldout={tmp_path / 'problems.json'}", "--set", "data.heldout_size=2",
                 "--set", "rollout.prompts_per_step=4", "--set", "rollout.group_size=4",
                 "--set", "rollout.backend=hf", "--set", "rollout.max_new_tokens=16", "--set", "actor.mini_batch_size=2",
                 "--set", "actor.max_tokens_per_microbatch=120", "--set", "trainer.checkpoint_every=2")
    assert done.returncode == 0, done.stderr
    saved = (out / "config.yaml").read_text()
    assert "mixed_precision: bf16" in saved and "lr: 1.0e-06" in saved
    ckpt = out / "checkpoints" / "step_000002"
    before = load_file(tmp_path / "model" / "model.safetensors")
    master = load_file(ckpt / "master_weights.safetensors")
    assert {v.dtype for v in load_file(ckpt / "policy" / "model.safetensors").values()} == {torch.bfloat16}
    matrices = [k for k, v in before.items() if v.dim() == 2]
    assert matrices and all(not torch.equal(before[k], master[k]) for k in matrices)


def test_a_command_of_a_missing_extra_says_what_to_install():
    # as if the studio extra (fastapi, celery, ...) were not installed
    code = ("import sys; sys.modules['fastapi'] = None; sys.modules['celery'] = None; "
            "from remix_engine.cli import main; sys.exit(main(['studio', '--port', '1']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "'remix studio' needs fastapi" in done.stderr and "make setup" in done.stderr, done.stderr
