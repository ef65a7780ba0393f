"""The monitor on the real default model and real rows: a shifted window alarms, an unshifted one does not, a stale
reference is refused, and the per-request flag fires on inputs the model cannot read."""

import copy
import csv

import numpy as np
import pytest
import torch

from camtl import monitoring as M
from camtl.tasks import load_split
from tests.conftest import GLUE_DIR, REPO_ROOT

AG_NEWS = REPO_ROOT.parent / "shared" / "data" / "extra" / "AGNews" / "test.csv"


@pytest.fixture(scope="module")
def served():
    """The default model (fp32, eval) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from camtl.default_model import ensure_default_model

    folder = ensure_default_model()
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    return model, AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)


@pytest.fixture(scope="module")
def sst2_dev():
    return load_split("sst2", "validation", GLUE_DIR)


@pytest.fixture(scope="module")
def reference(served, sst2_dev):
    """SST-2: 300 dev rows held out (the model never trained on dev), STS-B: 100; PCA on 150 train rows each."""
    model, tokenizer = served
    held = {"sst2": sst2_dev.select(range(300)), "stsb": stsb_dev().select(range(100))}
    train = {name: load_split(name, "train", GLUE_DIR, max_rows=150, seed=0) for name in held}
    return M.build_reference(model, tokenizer, held, train, train_max_length=128)


def stsb_dev():
    """STS-B's dev rows shuffled (the file runs genre by genre: news, captions, forums; its first rows against the
    next ones are a real shift)."""
    return load_split("stsb", "validation", GLUE_DIR, max_rows=1500, seed=0)


@pytest.fixture(scope="module")
def sst2_window(served, sst2_dev):
    """150 SST-2 dev rows outside the reference."""
    return M.extract_features(*served, "sst2", sst2_dev.select(range(300, 450))["text_a"])


def ag_news(n: int) -> list[str]:
    with open(AG_NEWS, encoding="utf-8", newline="") as f:
        return [f"{title}. {body}" for _, title, body in list(csv.reader(f))[:n]]


def test_unshifted_window_does_not_alarm_and_estimates_the_accuracy(reference, sst2_dev, sst2_window):
    rows, window = sst2_dev.select(range(300, 450)), sst2_window
    status = M.compare(reference.tasks["sst2"], window)
    assert status.status == "ok", status.reasons
    assert {t.signal for t in status.tests} == set(M.SIGNALS)
    assert all(t.p_value > 0.05 for t in status.tests), [t.as_dict() for t in status.tests]
    real = float((window.logits.argmax(-1) == np.asarray(rows["label"])).mean())
    assert abs(status.estimated_accuracy - real) < 0.06, (status.estimated_accuracy, real)
    meta = reference.tasks["sst2"].meta
    assert meta["ece_after"] < meta["ece_before"]  # temperature scaling calibrates the held-out rows


def test_out_of_domain_window_alarms_with_reasons_and_atypical_inputs(served, reference):
    model, tokenizer = served
    news = ag_news(150)
    status = M.compare(reference.tasks["sst2"], M.extract_features(model, tokenizer, "sst2", news))
    assert status.status == "alarm"
    fired = {t.signal for t in status.tests if t.p_value * len(status.tests) < 0.05}
    assert {"representation", "length"} <= fired, status.reasons
    assert any(r.startswith("representation") for r in status.reasons)
    assert len(status.atypical) == 5 and all(a["text"] in [t[: M.TEXT_CHARS] for t in news] for a in status.atypical)


def test_regression_task_window(served, reference):
    model, tokenizer = served
    dev = stsb_dev().select(range(100, 200))
    window = M.extract_features(model, tokenizer, "stsb", dev["text_a"], dev["text_b"])
    same = M.compare(reference.tasks["stsb"], window)
    assert same.status != "alarm" and same.estimated_accuracy is None
    news = ag_news(100)
    shifted = M.compare(reference.tasks["stsb"], M.extract_features(model, tokenizer, "stsb", news, news[::-1]))
    assert shifted.status == "alarm", shifted.reasons


def test_request_flag_fires_on_unreadable_inputs_only(served, reference, sst2_window):
    model, tokenizer = served
    monitor = M.Monitor(reference, window=50)
    texts = ["😀😀😀", "x" * 5000, "a gripping, beautiful film"]
    f = M.extract_features(model, tokenizer, "sst2", texts)
    flags = monitor.observe("sst2", f.logits, f.pooled, f.unk_share, f.lengths, f.texts)
    assert [fl.flagged for fl in flags] == [True, True, False]
    assert "unknown" in flags[0].in_words() and "unknown" in flags[1].reasons[0]
    dev = sst2_window
    share = M.flag(reference.tasks["sst2"], dev.unk_share, reference.tasks["sst2"].reduce(dev.pooled)).mean()
    assert share <= 0.02, share


def test_unk_share_counts_unk_although_it_is_a_special_token(served):
    _, tokenizer = served
    assert tokenizer.unk_token_id in tokenizer.all_special_ids
    enc = tokenizer(["😀 film", "a film"], padding=True, return_tensors="pt")
    lengths, share = M.token_descriptors(enc["input_ids"], enc["attention_mask"], tokenizer)
    assert share.tolist() == [0.5, 0.0] and lengths.tolist() == [4, 4]


def test_saved_reference_loads_and_a_stale_one_is_refused(served, reference, tmp_path):
    model, _ = served
    tensors, meta = reference.save(tmp_path)
    assert tensors.stat().st_size + meta.stat().st_size < 200_000
    loaded = M.Reference.load(tmp_path, model)
    for part in M.ARRAYS:
        np.testing.assert_array_equal(getattr(loaded.tasks["sst2"], part), getattr(reference.tasks["sst2"], part))
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.bert.encoder.layer[3].output.dense.weight[0, 0] += 1e-3
    with pytest.raises(M.StaleReferenceError, match=r"\['sst2', 'stsb'\].*python -m camtl.monitoring build"):
        M.Reference.load(tmp_path, changed)
    with pytest.raises(M.StaleReferenceError):
        M.Monitor(loaded).attach(changed, tokenizer=served[1])
    other_head = copy.deepcopy(model)
    with torch.no_grad():
        other_head.heads["sst2"].weight[0, 0] += 1e-3
    with pytest.raises(M.StaleReferenceError, match=r"\['sst2'\]"):
        M.Reference.load(tmp_path, other_head)


def test_adding_a_task_keeps_the_old_tasks_references_valid(served, tmp_path, reference):
    model, _ = served
    reference.save(tmp_path)
    grown = copy.deepcopy(model)
    grown.add_task(
        {"name": "cr", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]}
    )
    assert M.Reference.load(tmp_path, grown).tasks.keys() == {"sst2", "stsb"}
    fingerprints = M.task_fingerprints(grown)
    assert {n: fingerprints[n] for n in reference.fingerprints} == reference.fingerprints


def test_attached_pipeline_feeds_the_monitor(served, reference, sst2_dev):
    from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline

    model, tokenizer = served
    pipe = CaMtlClassificationPipeline(model=model, tokenizer=tokenizer)
    monitor = M.Monitor(reference, window=40, min_window=30)
    handle = monitor.attach(pipe)
    texts = sst2_dev.select(range(300, 335))["text_a"]
    pipe(list(texts), task_name="sst2", batch_size=8)
    pipe(
        [{"text": "A man plays.", "text_pair": "Someone plays."}, {"text": "x" * 5000, "task_name": "sst2"}],
        task_name="stsb",
        batch_size=2,
    )  # a mixed batch: one STS-B row, one SST-2 row
    assert monitor.requests == {"sst2": 36, "stsb": 1}
    assert [f.flagged for f in monitor.last_flags] == [False, True]
    status = monitor.status()
    assert status["sst2"].window == 36 and status["sst2"].status in M.STATUSES
    assert status["stsb"].reasons == ["too few requests to judge (1 of at least 30)"]
    handle.remove()
    pipe("a fine film", task_name="sst2")
    assert monitor.requests["sst2"] == 36
    monitor.reset()
    assert not monitor.requests and len(monitor.window_features("sst2")) == 0


def test_mmd_permutation_test_tells_a_shift_from_none():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(150, 4)), rng.normal(size=(100, 4)), rng.normal(0.5, 1, size=(100, 4))
    bandwidth = M._median_distance(x, 0)
    assert M.mmd_test(x, y, bandwidth, 200, np.random.default_rng(1))[1] > 0.05
    assert M.mmd_test(x, z, bandwidth, 200, np.random.default_rng(1))[1] < 0.01


def test_bad_settings_and_missing_files_are_clear_errors(reference, tmp_path):
    with pytest.raises(ValueError, match="window must be an integer of at least 2"):
        M.Monitor(reference, window=1)
    with pytest.raises(ValueError, match="alpha"):
        M.Monitor(reference, alpha=0.3, warn_alpha=0.2)
    with pytest.raises(ValueError, match=r"task 'rte'; the reference covers \['sst2', 'stsb'\]"):
        M.Monitor(reference).observe("rte", np.zeros((1, 2)))
    with pytest.raises(FileNotFoundError, match="python -m camtl.monitoring build"):
        M.Reference.load(tmp_path)
