"""Supervised warm start of the toy policy, cached on disk.

`warm_start` fine-tunes the freshly initialised toy model on toy demonstrations (remix_engine/toy.py)
with AdamW and a next-token loss on the response tokens only (prompt and padding are masked), so
that reinforcement learning starts from a policy that knows the ``…</think> \\boxed{N}`` format
and is right part of the time.

The result is cached under ``$REMIX_CACHE_DIR`` (else ``cfg.cache_dir``, else
``~/.cache/remix-studio/warmstart``) in a folder named by a hash of everything that determines it:
the tokenizer vocabulary and chat template, the model config, the warm-start settings (steps,
batch size, lr), the task version, the demonstration mix, the source of the functions that write
demonstrations and train on them, and the seed. Several processes may race
to fill the same entry: each trains into a private temporary folder and renames it into place;
the first rename wins and the others discard their copy. A cache hit only reads one small
safetensors file into the given model.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from remix_engine import toy
from remix_engine.sinks import StopRequested

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "warmstart.json"

# Schedule of the warm start (part of the cache key, with the task and its demonstration mix).
WARMUP_STEPS = 20
MIN_LR_RATIO = 0.1
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
MICRO_BATCH = 16  # rows per forward/backward pass (see _accumulate_gradient)


def cache_root(cfg) -> Path:
    env = os.environ.get("REMIX_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "warmstart"
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path.home() / ".cache" / "remix-studio" / "warmstart"


def cache_key(model, tokenizer, cfg, seed: int, task: toy.ToyTask = toy.DEFAULT_TASK) -> str:
    """Hash of everything that determines the warm-started weights."""
    config = model.config.to_dict()
    for volatile in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures",
                     "_attn_implementation_autoset", "use_cache"):
        config.pop(volatile, None)
    payload = {
        "format": CACHE_FORMAT,
        "task": [task.version, task.terms],
        "vocab": sorted(tokenizer.get_vocab().items()),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "model": config,
        "warm_start": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr},
        "schedule": [WARMUP_STEPS, MIN_LR_RATIO, WEIGHT_DECAY, GRAD_CLIP, MICRO_BATCH],
        "demos": task.demo_mix,
        "code": _code_signature(),
        "seed": seed,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _code_signature() -> str:
    """Hash of the code that makes demonstrations and trains on them: editing it invalidates the cache."""
    parts = [inspect.getsource(f) for f in (toy.toy_demonstration, toy._sample_chain, toy._slip, toy.is_carry,
                                            demo_batch, _train_loop, _accumulate_gradient, _lr_at)]
    parts.append(repr((toy._CHECK_WORDS, toy._NOTICE_WORDS, toy.START_RANGE, toy.VALUE_RANGE)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _lr_at(step: int, total: int, lr: float) -> float:
    if step < WARMUP_STEPS:
        return lr * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)
    return lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def demo_batch(tokenizer, problems: list, rng: random.Random, demo_mix: dict[str, float]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (prompt and padding labelled -100)."""
    rows, labels = [], []
    for p in problems:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": p.problem}], tokenize=False, add_generation_prompt=True
        )
        response = toy.toy_demonstration(p, rng, **demo_mix)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p_ids + r_ids)
        labels.append([-100] * len(p_ids) + r_ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
        target[i, : len(lab)] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": target}


def train_on_demonstrations(
    model,
    tokenizer,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    demo_mix: dict[str, float] | None = None,
    callback: Callable[[int, float], None] | None = None,
    processes: int = 1,
    task: str = toy.DEFAULT_TASK.name,
) -> dict[str, Any]:
    """The supervised loop itself (no caching) on demonstrations of the toy task named `task`, with
    its demonstration mix unless `demo_mix` says otherwise. Returns {'loss': [...], 'seconds': s}.

    `callback(step, loss)` is called after every step (step counts from 1). With `processes` > 1
    the steps run data-parallel (see `_train_in_processes`).
    """
    train = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "demo_mix": demo_mix, "task": task}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = min(processes, cores, -(-batch_size // MICRO_BATCH))  # a rank needs a core and a micro-batch
    if processes > 1:
        return _train_in_processes(model, tokenizer, processes, callback, train)
    return _train_loop(model, tokenizer, callback=callback, **train)


def _train_loop(model, tokenizer, *, steps: int, batch_size: int, lr: float, seed: int,
                demo_mix: dict[str, float] | None, task: str, callback: Callable[[int, float], None] | None,
                group=None, rank: int = 0, world: int = 1) -> dict[str, Any]:  # noqa: ANN001
    """Every rank of a data-parallel warm start runs this same loop on the same batches, takes its
    share of each batch's micro-batches and sums the gradients over `group`."""
    demo_mix = demo_mix or toy.task_named(task).demo_mix
    rng = random.Random(f"warmstart-{seed}")
    problems = toy.toy_problems("train", steps * batch_size, seed=rng.randrange(2**31), task=task)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
    )
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            batch = demo_batch(tokenizer, problems[step * batch_size:(step + 1) * batch_size], rng, demo_mix)
            batch = {k: v.to(device) for k, v in batch.items()}
            for param_group in optim.param_groups:
                param_group["lr"] = _lr_at(step, steps, lr)
            optim.zero_grad(set_to_none=True)
            loss = _accumulate_gradient(model, batch, rank, world)
            if group is not None:
                loss = _all_reduce_gradient(model, loss, group)
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optim.step()
            losses.append(loss)
            if callback is not None:
                callback(step + 1, losses[-1])
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - t0}


def _accumulate_gradient(model, batch: dict[str, torch.Tensor], rank: int = 0, world: int = 1) -> float:
    """Backpropagate the batch's mean next-token loss over its response tokens; returns the loss.

    The rows go through in micro-batches of MICRO_BATCH rows of similar length, each cut to its
    own longest row: a third of a padded toy batch is padding, and skipping it makes a step ~18%
    faster. The gradient is the whole batch's (each micro-batch's summed loss is divided by the
    batch's token count); only the order of the float sums differs. Right padding makes the cut
    exact: under causal attention no real token sees a pad to its right. Rank `rank` of `world`
    takes micro-batches rank, rank + world, …
    """
    targets = batch["labels"][:, 1:]
    n_tokens = int((targets != -100).sum())
    lengths = batch["attention_mask"].sum(dim=1)
    total = 0.0
    for rows in torch.argsort(lengths).split(MICRO_BATCH)[rank::world]:
        width = int(lengths[rows].max())
        logits = model(input_ids=batch["input_ids"][rows, :width],
                       attention_mask=batch["attention_mask"][rows, :width]).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                 targets[rows, :width - 1].reshape(-1),
                                                 ignore_index=-100, reduction="sum") / max(1, n_tokens)
        loss.backward()
        total += loss.item()
    return total


def _all_reduce_gradient(model, loss: float, group) -> float:  # noqa: ANN001
    """Sum the ranks' gradients and losses: one flat buffer, one collective."""
    params = list(model.parameters())
    for param in params:
        if param.grad is None:  # this rank had no micro-batch
            param.grad = torch.zeros_like(param)
    flat = torch.cat([param.grad.reshape(-1) for param in params] + [torch.tensor([loss], dtype=params[0].dtype)])
    group.allreduce([flat]).wait()
    for param, part in zip(params, flat[:-1].split([param.numel() for param in params]), strict=True):
        param.grad.copy_(part.view_as(param))
    return float(flat[-1])


def _train_in_processes(model, tokenizer, processes: int, callback: Callable[[int, float], None] | None,
                        train: dict[str, Any]) -> dict[str, Any]:
    """Data-parallel warm start on CPU cores: this process is rank 0 and starts ranks 1… as
    `python -m remix_engine.warmstart` (one torch thread each, a private gloo group: no
    torch.distributed default group is touched). On a 2-core machine it nearly halves the warm
    start. Two micro-batches' gradients add up to the same floats in one process or two, so when
    a batch has at most `processes` micro-batches (the toy preset: 32 rows = 2 × 16) the weights
    are bitwise those of one process; with more they differ only in the order of float sums.
    `callback` runs here, as in one process; if it raises (a cancel), the other ranks are killed."""
    started = time.perf_counter()
    store = dist.TCPStore("127.0.0.1", 0, processes, True, timeout=_JOIN_TIMEOUT, wait_for_workers=False)
    # the ranks import this package from where this process did, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    children: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="remix-warmstart-") as tmp:
        job = Path(tmp) / "job.pt"
        torch.save({"model_class": type(model), "config": model.config, "state": _own_state(model),
                    "tokenizer": tokenizer, "train": train, "parent": os.getpid()}, job)
        try:
            children = [subprocess.Popen([sys.executable, "-m", "remix_engine.warmstart", str(job), str(rank),
                                          str(processes), str(store.port)], env=env) for rank in range(1, processes)]
            stats = _train_loop(model, tokenizer, callback=callback, group=_gloo_group(store, 0, processes),
                                rank=0, world=processes, **train)
            for child in children:
                if child.wait(timeout=_RANK_TIMEOUT.total_seconds()) != 0:
                    raise RuntimeError(f"warm start: rank process {child.pid} exited with {child.returncode}")
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return {**stats, "seconds": time.perf_counter() - started}  # with the ranks' start-up


_JOIN_TIMEOUT = timedelta(seconds=120)  # for a rank process to start (import torch) and connect
_RANK_TIMEOUT = timedelta(seconds=300)  # for one collective


def _gloo_group(store, rank: int, world: int):  # noqa: ANN001, ANN202
    options = dist.ProcessGroupGloo._Options()
    options._timeout = _RANK_TIMEOUT
    options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    return dist.ProcessGroupGloo(store, rank, world, options)


def _rank_main(job_path: str, rank: int, world: int, port: int) -> None:
    """Rank `rank` (≥ 1) of `_train_in_processes`."""
    torch.set_num_threads(1)
    job = torch.load(job_path, weights_only=False)  # written by our parent a moment ago
    store = dist.TCPStore("127.0.0.1", port, world, False, timeout=_JOIN_TIMEOUT)
    model = job["model_class"](job["config"])
    model.load_state_dict(job["state"], strict=False)
    if model.config.tie_word_embeddings:
        model.tie_weights()

    def parent_alive(_step: int, _loss: float) -> None:
        if os.getppid() != job["parent"]:  # rank 0 is gone: stop instead of training for nobody
            os._exit(1)

    _train_loop(model, job["tokenizer"], callback=parent_alive, group=_gloo_group(store, rank, world),
                rank=rank, world=world, **job["train"])


def _own_state(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The state dict without the tied output head (stored once, as the embedding)."""
    return {k: v for k, v in model.state_dict().items() if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}


def _load_into(model, entry: Path) -> None:
    state = load_file(str(entry / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output weights are stored once; anything else missing means a stale or foreign entry.
    missing = [k for k in missing if k != "lm_head.weight" or not model.config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"warm-start cache entry {entry} does not fit the model "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if model.config.tie_word_embeddings:
        model.tie_weights()


def cached_entry(model, tokenizer, cfg, seed: int, task: toy.ToyTask = toy.DEFAULT_TASK) -> Path:
    """Where this warm start is (or would be) cached."""
    return cache_root(cfg) / cache_key(model, tokenizer, cfg, seed, task)


def warm_start(model, tokenizer, cfg, seed: int, *, task: str | toy.ToyTask = toy.DEFAULT_TASK,
               log: Callable[[str], None] | None = logger.info, should_stop: Callable[[], bool] | None = None):
    """Fine-tune `model` on demonstrations of the toy `task` per `cfg` (WarmStartConfig), or load
    the cached result.

    Returns the same model object, in eval mode. ``cfg.steps == 0`` returns it untouched.
    `should_stop` is polled every step: when true, `StopRequested` is raised and nothing is cached.
    """
    if cfg.steps == 0:
        return model
    task = toy.task_named(task)
    entry = cached_entry(model, tokenizer, cfg, seed, task)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if _try_load(model, entry, initial, log):
        return model
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(entry.parent / f".{entry.name}.lock"):
        # Another process may have filled the entry while this one waited for the lock.
        if _try_load(model, entry, initial, log):
            return model
        if log:
            log(f"warm start: {cfg.steps} steps x {cfg.batch_size} demonstrations (cache miss: {entry.name}); "
                "runs once per seed, later runs load it from the cache")
        with _progress(cfg.steps, log) as report:
            def step_done(step: int, loss: float) -> None:
                report(step, loss)
                if should_stop is not None and should_stop():
                    raise StopRequested(f"stopped during the warm start (step {step} of {cfg.steps})")

            stats = train_on_demonstrations(model, tokenizer, steps=cfg.steps, batch_size=cfg.batch_size,
                                             lr=cfg.lr, seed=seed, callback=step_done, processes=cfg.processes,
                                             task=task.name)
        tail = stats["loss"][-20:]
        _store(model, entry, {
            "key": entry.name, "task": task.version, "seed": seed,
            "warm_start": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr},
            "demos": task.demo_mix, "final_loss": sum(tail) / len(tail),
            "seconds": round(stats["seconds"], 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        if log:
            log(f"warm start: done in {stats['seconds']:.0f} s (loss {sum(tail) / len(tail):.3f}); cached in {entry}")
    return model


@contextlib.contextmanager
def _progress(steps: int, log: Callable[[str], None] | None):
    """A per-step callback that shows progress: a bar on a terminal, else a log line (step, loss,
    time left) every 10% of the steps, which is what a studio job's log shows."""
    from tqdm import tqdm  # noqa: PLC0415 - only needed on a cache miss

    bar = tqdm(total=steps, desc="warm start", unit="step", dynamic_ncols=True, disable=None)
    every = max(1, steps // 10)
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if bar.disable and log and (step % every == 0 or step == steps):
            left = (time.perf_counter() - start) / step * (steps - step)
            log(f"warm start: step {step}/{steps}, loss {loss:.3f}, about {left:.0f} s left")

    try:
        yield report
    finally:
        bar.close()


def _try_load(model, entry: Path, initial: dict[str, torch.Tensor], log) -> bool:
    """Load a cached entry into `model`; a corrupt entry is moved aside and the model reset."""
    if not (entry / WEIGHTS_FILE).is_file():
        return False
    try:
        _load_into(model, entry)
    except Exception as exc:
        if log:
            log(f"warm start: discarding unreadable cache entry {entry}: {exc}")
        model.load_state_dict(initial)
        stale = entry.with_name(f".stale-{entry.name}-{os.getpid()}")
        try:
            os.rename(entry, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
        return False
    model.eval()
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An advisory inter-process lock (POSIX flock), so that processes that miss the cache at the
    same time train once instead of each training; a no-op where flock is unavailable. The rename
    in `_store` keeps the cache consistent either way."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _store(model, entry: Path, meta: dict[str, Any]) -> None:
    """Write atomically: a private temp folder renamed into place; a lost race is not an error."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        state = {k: v.detach().contiguous().clone() for k, v in _own_state(model).items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, entry)
        except OSError:
            pass  # another process stored the same entry first; ours is identical, drop it
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # a data-parallel warm-start rank, started by _train_in_processes
    _rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
