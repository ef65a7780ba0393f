"""The CA-MTL pipeline: results, batching, errors, and loading from a saved folder by remote code alone."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modeling_camtl.pipeline_camtl import CUSTOM_PIPELINES, PIPELINE_TASK, CaMtlClassificationPipeline
from tests.camtl_fixtures import MAX_POSITIONS, TASKS, tiny_checkpoint

PAIR = {"text": "A man is playing a guitar.", "text_pair": "Someone plays music."}


@pytest.fixture(scope="module")
def pipe():
    folder = tiny_checkpoint()
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    return CaMtlClassificationPipeline(model=model, tokenizer=AutoTokenizer.from_pretrained(folder), device=-1)


def _model_logits(pipe, task, text, text_pair=None):
    batch = pipe.tokenizer(text, text_pair, return_tensors="pt")
    with torch.no_grad():
        return pipe.model(**batch, task_ids=torch.tensor([pipe.model.config.task_id(task)])).logits[0]


def test_classification_returns_every_label_most_likely_first(pipe):
    result = pipe("a gripping, funny film", task_name="sst2")
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True) and {r["label"] for r in result} == {"negative", "positive"}
    assert sum(r["score"] for r in result) == pytest.approx(1.0)
    expected = _model_logits(pipe, "sst2", "a gripping, funny film")[:2].softmax(-1)
    assert {r["label"]: r["score"] for r in result} == pytest.approx(
        dict(zip(["negative", "positive"], expected.tolist()))
    )
    assert len(pipe("a gripping, funny film", task_name="sst2", top_k=1)) == 1


def test_pair_and_regression_tasks(pipe):
    [result] = pipe([PAIR], task_name="mnli", top_k=2)
    assert len(result) == 2 and {r["label"] for r in result} <= {"entailment", "neutral", "contradiction"}
    score = pipe(PAIR, task_name="stsb")
    assert set(score) == {"score"}
    assert score["score"] == pytest.approx(
        float(_model_logits(pipe, "stsb", PAIR["text"], PAIR["text_pair"])[0]), abs=1e-5
    )


def test_a_mixed_task_batch_is_one_forward_pass_with_the_same_results(pipe):
    inputs = [
        {"text": "fine", "task_name": "sst2"},
        {**PAIR, "task_name": "rte"},
        {**PAIR, "task_name": "stsb"},
        {**PAIR, "task_name": "mnli"},
    ]
    seen = []
    handle = pipe.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["task_ids"].tolist()), with_kwargs=True
    )
    try:
        batched = pipe(inputs, batch_size=len(inputs))
    finally:
        handle.remove()
    assert seen == [[0, 1, 2, 3]]
    one_by_one = [pipe(x) for x in inputs]
    for b, s in zip(batched, one_by_one):
        if isinstance(s, dict):
            assert b["score"] == pytest.approx(s["score"], abs=1e-5)
        else:
            assert [r["label"] for r in b] == [r["label"] for r in s]
            assert [r["score"] for r in b] == pytest.approx([r["score"] for r in s], abs=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p("text", task_name="nope"), r"Unknown task 'nope'. Valid tasks: 0=sst2, 1=rte"),
        (lambda p: p("text"), r"Say which task to run"),
        (lambda p: p("  ", task_name="sst2"), r"sentence is empty"),
        (lambda p: p("only one", task_name="rte"), r"reads a pair: give both sentence1 and sentence2"),
        (lambda p: p(PAIR, task_name="sst2"), r"reads one text \(sentence\); it got a text_pair too"),
        (lambda p: p({"txt": "x"}, task_name="sst2"), r"holds 'text'"),
        (
            lambda p: p("word " * 100, task_name="sst2", truncation=False),
            rf"102 tokens long; this model reads at most {MAX_POSITIONS} tokens",
        ),
        (lambda p: p("x", task_name="sst2", top_k=0), r"top_k must be a positive integer"),
    ],
)
def test_bad_inputs_raise_clear_errors(pipe, call, message):
    with pytest.raises(ValueError, match=message):
        call(pipe)


def test_long_inputs_are_truncated_by_default(pipe):
    assert len(pipe("word " * 100, task_name="sst2")) == 2


def test_config_entry_matches_transformers_own_custom_pipeline_saving(pipe, tmp_path):
    """What save_pipeline_files writes is what Pipeline.save_pretrained writes for a registered pipeline."""
    from transformers.pipelines import PIPELINE_REGISTRY

    folder = tiny_checkpoint()
    assert (folder / "pipeline_camtl.py").is_file()
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=CaMtlClassificationPipeline,
        pt_model=AutoModelForSequenceClassification,
        type="text",
    )
    try:
        pipe.save_pretrained(tmp_path)
    finally:
        PIPELINE_REGISTRY.supported_tasks.pop(PIPELINE_TASK)
        del CaMtlClassificationPipeline._registered_impl
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    assert (tmp_path / "pipeline_camtl.py").read_text() == (folder / "pipeline_camtl.py").read_text()


FRESH_PROCESS = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    folder = sys.argv[1]
    assert importlib.util.find_spec("modeling_camtl") is None, "the package must not be importable here"
    pipe = pipeline(model=folder, trust_remote_code=True)
    named = pipeline("camtl-classification", model=folder, trust_remote_code=True, task_name="rte")
    out = {"class": type(pipe).__module__ + "." + type(pipe).__name__, "task": pipe.task,
           "sst2": pipe("a gripping, funny film", task_name="sst2"),
           "rte": named([{"text": "A man plays.", "text_pair": "Someone plays."}] * 3, batch_size=3, top_k=1),
           "stsb": pipe({"text": "A man plays.", "text_pair": "Someone plays."}, task_name="stsb")}
    try:
        pipe("text", task_name="nope")
    except ValueError as e:
        out["error"] = str(e)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    batch = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)("a gripping, funny film",
                                                                          return_tensors="pt")
    with torch.no_grad():
        out["sst2_logits"] = model(**batch, task_ids=torch.tensor([0])).logits[0, :2].softmax(-1).tolist()
    print(json.dumps(out))
""")


def test_pipeline_loads_from_the_folder_alone_in_a_fresh_process(tmp_path):
    """Remote code only: no package on the path, cwd outside the repo, offline, a fresh module cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    script = tmp_path / "use_pipeline.py"
    script.write_text(FRESH_PROCESS)
    run = subprocess.run(
        [sys.executable, str(script), str(tiny_checkpoint())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["class"].startswith("transformers_modules.") and out["class"].endswith(".CaMtlClassificationPipeline")
    assert out["task"] == PIPELINE_TASK
    by_label = {r["label"]: r["score"] for r in out["sst2"]}
    assert [by_label["negative"], by_label["positive"]] == pytest.approx(out["sst2_logits"], abs=1e-5)
    assert len(out["rte"]) == 3 and all(len(r) == 1 and r[0]["label"] in TASKS[1]["labels"] for r in out["rte"])
    assert set(out["stsb"]) == {"score"}
    assert "Unknown task 'nope'" in out["error"]
