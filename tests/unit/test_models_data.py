"""Toy tokenizer/model, model loading errors, data sources, prompt rendering and the warm-start cache."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from remix_engine import toy, warmstart
from remix_engine.benchmarks import BENCHMARKS, benchmark_search_dirs
from remix_engine.config import DataConfig, ModelConfig, WarmStartConfig
from remix_engine.data import (
    DataError,
    Problem,
    PromptTooLongError,
    encode_prompts,
    load_file,
    load_problems,
    render_prompt,
)
from remix_engine.models import (
    ModelLoadError,
    build_toy_model,
    build_toy_tokenizer,
    load_policy,
    load_pretrained,
    n_parameters,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"
needs_benchmarks = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/benchmarks not present")

TEXT = "<s>Compute 47+5-3.\n<think>47+5=52\n52-3=49 wait, check\n</think> \\boxed{49}"


@pytest.fixture(scope="module")
def tok():
    return build_toy_tokenizer()


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_character_level_with_single_token_tags(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "<s>" and "<think>" in pieces and "</think>" in pieces and "\\boxed{" in pieces
    assert pieces[1:8] == list("Compute")
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == TEXT  # nothing lost: spaces and newlines survive
    assert build_toy_tokenizer().get_vocab() == tok.get_vocab()  # deterministic


def test_decode_skipping_special_tokens_keeps_the_think_tags(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    text = tok.decode(ids, skip_special_tokens=True)
    assert text == TEXT.removeprefix("<s>")
    assert "</think> \\boxed{49}" in text and "<think>" in text
    assert tok.batch_decode([ids], skip_special_tokens=True) == [text]


def test_chat_template_mirrors_r1_distill(tok):
    rendered = tok.apply_chat_template([{"role": "user", "content": "Compute 1+2."}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == "<s>Compute 1+2.\n<think>"
    bare = tok.apply_chat_template([{"role": "user", "content": "Compute 1+2."}], tokenize=False)
    assert bare == "<s>Compute 1+2."


def test_tokenizer_round_trips_through_auto_tokenizer(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(TEXT, add_special_tokens=False)["input_ids"] == tok(TEXT, add_special_tokens=False)["input_ids"]
    assert again.chat_template == tok.chat_template
    assert (again.pad_token, again.eos_token, again.bos_token) == ("<pad>", "</s>", "<s>")
    assert again.padding_side == "left"
    assert "</think>" in again.decode(again(TEXT)["input_ids"], skip_special_tokens=True)


# ----------------------------------------------------------------------------- model


def test_toy_model_is_small_seeded_and_reloadable(tok, tmp_path):
    model = build_toy_model(tok, seed=0)
    assert model.config.vocab_size == len(tok)
    assert 0.5e6 < n_parameters(model) < 1.5e6
    same = build_toy_model(tok, seed=0)
    other = build_toy_model(tok, seed=1)
    w = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[w], same.state_dict()[w])
    assert not torch.equal(model.state_dict()[w], other.state_dict()[w])

    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_pretrained(tmp_path)
    assert loaded.config._attn_implementation == "eager"
    ids = torch.tensor([tok(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)
    # the checkpoint directory gives back the character-level tokenizer, not transformers' Qwen2 one
    assert loaded_tok(TEXT, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert loaded_tok.padding_side == "left" and loaded_tok.chat_template == tok.chat_template


def test_load_pretrained_errors_are_clear(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="not found.*no-such-model"):
        load_pretrained(missing)
    with pytest.raises(ModelLoadError, match="not found"):
        load_policy(ModelConfig(name_or_path=str(missing)), WarmStartConfig(steps=0), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_pretrained(tmp_path / "empty")
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_pretrained(tmp_path / "file.bin")


def test_load_policy_toy_without_warm_start(tok):
    model, tokenizer = load_policy(ModelConfig(), WarmStartConfig(steps=0), seed=3)
    assert tokenizer.get_vocab() == tok.get_vocab()
    ref = build_toy_model(tok, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))
    # model.dtype names the inference copies' dtype: the policy itself is always an fp32 master
    model, _ = load_policy(ModelConfig(dtype="bfloat16"), WarmStartConfig(steps=0), seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


# ----------------------------------------------------------------------------- warm start


def test_warm_start_trains_then_hits_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = WarmStartConfig(steps=3, batch_size=4, lr=3e-3)
    tok = build_toy_tokenizer()
    fresh = build_toy_model(tok, seed=0)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    trained = warmstart.warm_start(fresh, tok, cfg, seed=0)
    assert trained is fresh and not trained.training
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    key = warmstart.cache_key(trained, tok, cfg, 0)
    entries = list((tmp_path / "cache" / "warmstart").iterdir())
    assert sorted(e.name for e in entries) == sorted([key, f".{key}.lock"])  # no temp dirs left
    meta = json.loads((tmp_path / "cache" / "warmstart" / key / warmstart.META_FILE).read_text())
    assert meta["warm_start"] == {"steps": 3, "batch_size": 4, "lr": 3e-3} and meta["seed"] == 0

    second = build_toy_model(tok, seed=0)
    t0 = time.process_time()  # CPU time: wall time on a loaded shared machine says little
    second = warmstart.warm_start(second, tok, cfg, seed=0)
    assert time.process_time() - t0 < 1.0
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), second.state_dict().values(),
                                                 strict=True))
    # the tied output head still shares the embedding after loading
    assert second.lm_head.weight.data_ptr() == second.model.embed_tokens.weight.data_ptr()

    # load_policy goes through the same cache
    model, _ = load_policy(ModelConfig(), cfg, seed=0)
    assert torch.equal(model.lm_head.weight, trained.lm_head.weight)


def test_warm_start_micro_batches_give_the_whole_batch_gradient():
    """The length-sorted micro-batches only skip padding: loss and gradient are the padded batch's."""
    import random

    tok = build_toy_tokenizer()
    problems = toy.toy_problems("train", 2 * warmstart.MICRO_BATCH + 3, seed=5)
    batch = warmstart.demo_batch(tok, problems, random.Random(0), toy.DEFAULT_TASK.demo_mix)
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max()  # there is padding to skip
    model = build_toy_model(tok, seed=0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    whole = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                              batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    whole.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss = warmstart._accumulate_gradient(model, batch)
    assert loss == pytest.approx(whole.item(), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_data_parallel_warm_start_gives_the_same_weights_and_stops_on_cancel():
    """Two ranks on the toy batch shape (two micro-batches) end bitwise where one process does; a
    callback that raises (a cancel) stops both ranks."""
    import psutil

    tok = build_toy_tokenizer()
    train = {"steps": 3, "batch_size": 2 * warmstart.MICRO_BATCH, "lr": 3e-3, "seed": 0}
    one, two = build_toy_model(tok, seed=0), build_toy_model(tok, seed=0)
    alone = warmstart.train_on_demonstrations(one, tok, **train)
    seen: list[int] = []
    together = warmstart.train_on_demonstrations(two, tok, processes=2, callback=lambda step, _: seen.append(step),
                                                 **train)
    assert seen == [1, 2, 3] and together["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    def cancel(step: int, _loss: float) -> None:
        if step == 2:
            raise warmstart.StopRequested("cancelled")

    with pytest.raises(warmstart.StopRequested):
        warmstart.train_on_demonstrations(build_toy_model(tok, seed=0), tok, processes=2, callback=cancel,
                                          **{**train, "steps": 50})
    ranks = [c for c in psutil.Process().children(recursive=True) if "remix_engine.warmstart" in " ".join(c.cmdline())]
    assert ranks == []  # the rank process is gone, not left training


def test_warm_start_cache_key_and_corrupt_entry(tmp_path):
    tok = build_toy_tokenizer()
    model = build_toy_model(tok, seed=0)
    cfg = WarmStartConfig(steps=2, batch_size=2, lr=1e-3, cache_dir=str(tmp_path))
    key = warmstart.cache_key(model, tok, cfg, 0)
    assert key == warmstart.cache_key(build_toy_model(tok, seed=0), tok, cfg, 0)
    assert key != warmstart.cache_key(model, tok, cfg, 1)
    assert key != warmstart.cache_key(model, tok, cfg.model_copy(update={"steps": 3}), 0)
    assert key == warmstart.cache_key(model, tok, cfg.model_copy(update={"cache_dir": "/elsewhere"}), 0)
    assert key != warmstart.cache_key(model, tok, cfg, 0, toy.TASKS["toy-long"])  # another task's demonstrations

    entry = tmp_path / key
    entry.mkdir()
    (entry / warmstart.WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    trained = warmstart.warm_start(model, tok, cfg, seed=0)  # retrains and replaces the bad entry
    reference = warmstart.warm_start(build_toy_model(tok, seed=0), tok, cfg.model_copy(update={"cache_dir": str(
        tmp_path / "clean")}), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted([key, "clean"])


def test_warm_start_reports_progress_where_no_terminal_shows_a_bar(tmp_path):
    tok = build_toy_tokenizer()
    lines: list[str] = []
    cfg = WarmStartConfig(steps=20, batch_size=2, cache_dir=str(tmp_path))
    warmstart.warm_start(build_toy_model(tok, seed=0), tok, cfg, seed=0, log=lines.append)
    steps = [line.split(",")[0] for line in lines if line.startswith("warm start: step")]
    assert steps == [f"warm start: step {n}/20" for n in range(2, 21, 2)]  # every 10%, for a job's log
    assert "about 0 s left" in lines[-2] and lines[-1].startswith("warm start: done")
    lines.clear()
    warmstart.warm_start(build_toy_model(tok, seed=0), tok, cfg, seed=0, log=lines.append)
    assert not any("step" in line for line in lines)  # a cache hit trains nothing


def test_warm_start_steps_zero_is_a_no_op(tmp_path):
    tok = build_toy_tokenizer()
    model = build_toy_model(tok, seed=0)
    assert warmstart.warm_start(model, tok, WarmStartConfig(steps=0, cache_dir=str(tmp_path)), 0) is model
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- data sources


def test_toy_source():
    held = load_problems("toy", split="heldout", limit=20, seed=123)
    assert len(held) == 20 and held == load_problems("toy", split="heldout", limit=20, seed=0)
    train = load_problems("toy", limit=10, seed=1)
    assert all(isinstance(p, Problem) and p.answer.lstrip("-").isdigit() for p in train)
    with pytest.raises(DataError, match="split"):
        load_problems("toy", split="test")


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_source(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        {"id": "a", "problem": "1+1?", "answer": "2", "source": "me"},
        {"id": "b", "problem": "Half?", "answer": 0.5, "meta": {"level": 2}},
        {"id": "c", "problem": "Whole?", "answer": 142.0},
        {"id": "d", "problem": "Sci?", "answer": "4.5e33", "meta": {"answers_raw": ["4.5e33\n", " 4.5 \\times 10^{33}"]}},
        {"problem": "No id", "answer": ["x", "y"]},
        "",
    ])
    probs = load_problems(str(path))
    assert [p.id for p in probs] == ["a", "b", "c", "d", "mine-5"]
    assert probs[0].meta == {"source": "me"}
    assert probs[1].answer == "0.5" and probs[1].meta == {"level": 2}
    assert probs[2].answer == "142"
    assert probs[3].answer == ["4.5e33", "4.5 \\times 10^{33}"]
    assert probs[4].answers == ["x", "y"]
    assert [p.id for p in load_problems(str(path), limit=2)] == ["a", "b"]


@pytest.mark.parametrize(("row", "message"), [
    ('{"id": "x", "problem": "p", "answer": "1"', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"id": "x", "answer": "1"}', "'problem'"),
    ('{"id": "x", "problem": "p"}', "no 'answer'"),
    ('{"id": "x", "problem": "p", "answer": null}', "'answer' must be"),
    ('{"id": "first", "problem": "p", "answer": "1"}', "duplicate id 'first'"),
])
def test_jsonl_bad_row_names_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "bad.jsonl", ['{"id": "first", "problem": "p", "answer": "1"}', row])
    with pytest.raises(DataError, match=message) as err:
        load_file(path)
    assert f"{path}:2" in str(err.value)


def test_unknown_sources_are_clear(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="unknown data source"):
        load_problems("what is this?")


@needs_benchmarks
def test_benchmark_names_resolve_in_the_shared_data(monkeypatch):
    monkeypatch.delenv("REMIX_BENCHMARKS_DIR", raising=False)
    assert benchmark_search_dirs() == [SHARED]
    sizes = {"aime24": 30, "amc23": 83, "math500": 500, "minerva": 272, "olympiadbench": 675}
    assert set(sizes) == set(BENCHMARKS)
    for name, n in sizes.items():
        probs = load_problems(name)
        assert len(probs) == n and len({p.id for p in probs}) == n
    amc = load_problems("amc23")
    assert all(isinstance(p.answer, str) and p.answer.lstrip("-").isdigit() for p in amc)  # "142", not "142.0"
    assert {p.answer for p in amc} >= {"142", "-4"}
    minerva = load_problems("minerva")
    assert any(isinstance(p.answer, list) and len(p.answer) > 1 for p in minerva)
    assert all(a == a.strip() and a for p in minerva for a in p.answers)
    assert load_problems("aime24", limit=3)[0].id == "aime24-I-1"


@needs_benchmarks
def test_benchmark_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIX_BENCHMARKS_DIR", str(tmp_path))
    _write(tmp_path / "tiny.jsonl", [{"id": "t1", "problem": "p", "answer": "1"}])
    assert [p.id for p in load_problems("tiny")] == ["t1"]
    assert len(load_problems("math500")) == 500  # standard names fall back to the shared data
    with pytest.raises(DataError, match=r"no nosuch.jsonl.*available: .*tiny"):
        load_problems("nosuch")


def test_hf_source_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the optional extra were not installed
    with pytest.raises(DataError, match=r"needs the Hugging Face `datasets` package"):
        load_problems("hf:agentica-org/DeepScaleR-Preview-Dataset")
    with pytest.raises(DataError, match="expected hf:<dataset id>"):
        load_problems("hf:")


# DeepScaleR-Preview's rows: problem / answer / solution, no id.
DEEPSCALER_ROWS = [
    {"problem": "What is $1+1$?", "answer": "2", "solution": "Add: $\\boxed{2}$."},
    {"problem": "Compute $3 \\cdot 4$.", "answer": "12", "solution": "$\\boxed{12}$"},
    {"problem": "Find $x$ if $x^2=9$, $x>0$.", "solution": "So $x=\\boxed{3}$."},  # answer from the solution
]


def _check_deepscaler(problems, stem):
    assert [p.id for p in problems] == [f"{stem}-0", f"{stem}-1", f"{stem}-2"]
    assert [p.answer for p in problems] == ["2", "12", "3"]
    assert problems[0].meta["solution"] == "Add: $\\boxed{2}$."


def test_json_array_source(tmp_path):
    path = tmp_path / "deepscaler.json"
    path.write_text(json.dumps(DEEPSCALER_ROWS))
    _check_deepscaler(load_problems(str(path)), "deepscaler")
    assert len(load_problems(str(path), limit=2)) == 2
    (tmp_path / "object.json").write_text('{"problem": "p", "answer": "1"}')
    with pytest.raises(DataError, match="expected a JSON array"):
        load_problems(str(tmp_path / "object.json"))
    (tmp_path / "bad.json").write_text(json.dumps([DEEPSCALER_ROWS[0], {"problem": "p"}]))
    with pytest.raises(DataError, match=r"bad.json item 1: row has no 'answer'"):
        load_problems(str(tmp_path / "bad.json"))


def test_parquet_source(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(DEEPSCALER_ROWS), tmp_path / "deepscaler.parquet")  # row 2: null answer
    _check_deepscaler(load_problems(str(tmp_path / "deepscaler.parquet")), "deepscaler")
    pq.write_table(pa.Table.from_pylist([DEEPSCALER_ROWS[0], {"problem": "p"}]), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet row 1: 'answer' must be"):
        load_problems(str(tmp_path / "bad.parquet"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_problems(str(tmp_path / "junk.parquet"))


def test_hf_source_from_a_local_dataset_folder(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DEEPSCALER_ROWS))
    problems = load_problems(f"hf:{folder}")
    assert [p.answer for p in problems] == ["2", "12", "3"]
    with pytest.raises(DataError, match="could not load Hugging Face dataset"):
        load_problems(f"hf:{folder}:validation")


# ----------------------------------------------------------------------------- prompts


def test_render_prompt(tok):
    cfg = DataConfig(prompt_suffix=" Think.")
    assert render_prompt(tok, "Compute 1+2.", cfg, use_chat_template=True) == "<s>Compute 1+2. Think.\n<think>"
    assert render_prompt(tok, "Compute 1+2.", cfg, use_chat_template=False) == "Compute 1+2. Think."
    assert render_prompt(tok, "Compute 1+2.", DataConfig(prompt_suffix=""), True) == "<s>Compute 1+2.\n<think>"


def test_encode_prompts(tok):
    texts = [render_prompt(tok, "Compute 1+2.", DataConfig(prompt_suffix=""), True), "ab"]
    ids = encode_prompts(tok, texts, max_prompt_tokens=64)
    assert ids[0][0] == tok.bos_token_id and ids[0].count(tok.bos_token_id) == 1  # BOS from the template only
    assert ids[0][-1] == tok.convert_tokens_to_ids("<think>") and len(ids[1]) == 2
    with pytest.raises(PromptTooLongError, match="prompt 0 has 15 tokens > data.max_prompt_tokens=5"):
        encode_prompts(tok, texts, max_prompt_tokens=5)
    cut = encode_prompts(tok, texts, max_prompt_tokens=5, overflow="truncate_left")
    assert cut[0] == ids[0][-5:] and cut[1] == ids[1]
    assert encode_prompts(tok, [], 5) == []


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("REMIX_CACHE_DIR", raising=False)
    assert warmstart.cache_root(WarmStartConfig()) == Path.home() / ".cache" / "remix-studio" / "warmstart"
    assert warmstart.cache_root(WarmStartConfig(cache_dir=str(tmp_path))) == tmp_path
    monkeypatch.setenv("REMIX_CACHE_DIR", str(tmp_path / "env"))
    assert warmstart.cache_root(WarmStartConfig(cache_dir="/ignored")) == tmp_path / "env" / "warmstart"
    assert os.fspath(warmstart.cache_root(WarmStartConfig())).startswith(str(tmp_path))


def test_concurrent_cache_misses_train_once(tmp_path, monkeypatch):
    import threading

    calls = []
    real = warmstart.train_on_demonstrations

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(warmstart, "train_on_demonstrations", counting)
    tok = build_toy_tokenizer()
    cfg = WarmStartConfig(steps=2, batch_size=2, cache_dir=str(tmp_path))
    models = [build_toy_model(tok, seed=0) for _ in range(2)]
    threads = [threading.Thread(target=warmstart.warm_start, args=(m, tok, cfg, 0)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(),
                                                 strict=True))


def test_the_warm_start_demonstrates_the_task_data_train_names(tmp_path, monkeypatch):
    monkeypatch.delenv("REMIX_CACHE_DIR", raising=False)
    cfg = WarmStartConfig(steps=1, batch_size=2, lr=1e-3, cache_dir=str(tmp_path))
    load_policy(ModelConfig(), cfg, seed=0, task="toy-long")
    load_policy(ModelConfig(), cfg, seed=0, task="data.jsonl")  # not a toy task: the toy's demonstrations
    tasks = sorted(json.loads((e / warmstart.META_FILE).read_text())["task"] for e in tmp_path.iterdir() if e.is_dir())
    assert tasks == [toy.DEFAULT_TASK.version, toy.TASKS["toy-long"].version]
