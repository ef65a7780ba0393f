"""Tests of camtl.metrics against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from camtl.metrics import compute_task_metrics, glue_average
from camtl.tasks import get_task, user_task

# labels / predictions: TP=2, FN=1, TN=2, FP=1
LABELS = [1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 0, 0, 0, 1]


def test_accuracy() -> None:
    assert compute_task_metrics("accuracy", [0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 0.75, "main": 0.75}


def test_mcc_by_hand() -> None:
    tp, tn, fp, fn = 2, 2, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 3 / 9
    out = compute_task_metrics(get_task("cola"), PREDS, LABELS)
    assert out == pytest.approx({"mcc": mcc, "main": mcc}) and mcc == pytest.approx(1 / 3)


def test_f1_and_accuracy_mean_for_mrpc() -> None:
    precision, recall = 2 / 3, 2 / 3
    f1 = 2 * precision * recall / (precision + recall)
    out = compute_task_metrics(get_task("mrpc"), PREDS, LABELS)
    assert out == pytest.approx({"f1": f1, "accuracy": 4 / 6, "main": (f1 + 4 / 6) / 2})


def test_logits_and_float_labels() -> None:
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])  # argmax: 1, 0, 1
    out = compute_task_metrics(get_task("sst2"), logits, np.array([1.0, 0.0, 0.0], dtype=np.float32))
    assert out["accuracy"] == pytest.approx(2 / 3)


def test_macro_f1_for_three_classes(tmp_path) -> None:
    task = user_task(
        "three", train_file=tmp_path / "t.csv", text_columns="t", label_column="y", labels=["a", "b", "c"], metric="f1"
    )
    labels, preds = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # per class (precision, recall): a (1/2, 1/2), b (2/3, 1), c (1, 1/2)
    f1s = [2 * p * r / (p + r) for p, r in [(1 / 2, 1 / 2), (2 / 3, 1.0), (1.0, 1 / 2)]]
    assert compute_task_metrics(task, preds, labels)["f1"] == pytest.approx(sum(f1s) / 3)


def test_pearson_spearman_by_hand() -> None:
    preds, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    dp, dl = preds - preds.mean(), labels - labels.mean()
    pearson = (dp * dl).sum() / math.sqrt((dp**2).sum() * (dl**2).sum())
    out = compute_task_metrics(get_task("stsb"), preds.reshape(-1, 1), labels)  # (N, 1) head output
    assert out == pytest.approx({"pearson": pearson, "spearman": 1.0, "main": (pearson + 1.0) / 2})


@pytest.mark.parametrize("metric", ["mcc", "accuracy", "f1", "pearson_spearman"])
def test_constant_predictions_give_zero_not_nan(metric: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning / ConstantInputWarning either
        out = compute_task_metrics(metric, [0, 0, 0, 0], [0, 1, 1, 0])
        constant_labels = compute_task_metrics(metric, [0, 1, 1, 0], [1, 1, 1, 1])
    for result in (out, constant_labels):
        assert all(math.isfinite(v) for v in result.values())
    if metric != "accuracy":
        assert out["main"] == (0.0 if metric != "f1" else 0.25)  # f1: mean of F1 0 and accuracy 0.5
    assert compute_task_metrics("pearson_spearman", [1.0, float("nan")], [0.0, 1.0])["main"] == 0.0


def test_errors_and_average() -> None:
    with pytest.raises(ValueError, match="Unknown metric 'bleu'.*'mcc'"):
        compute_task_metrics("bleu", [1], [1])
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute_task_metrics("accuracy", [1, 0, 1], [1, 0])
    assert glue_average({"cola": {"main": 0.5}, "stsb": {"main": 0.9}}) == pytest.approx(0.7)


def test_majority_class_reference_by_hand() -> None:
    """Every dev row gets the training majority (class 1 here; the mean 2.0 for regression): the floor to clear."""
    from camtl.metrics import majority_class_metrics, majority_class_reference

    sst2, cola, stsb = get_task("sst2"), get_task("cola"), get_task("stsb")
    assert majority_class_metrics(sst2, [1, 1, 0], [0, 1, 1, 1]) == {"accuracy": 0.75, "main": 0.75, "answer": 1}
    assert majority_class_metrics(cola, [0, 0, 1], [0, 1])["main"] == 0.0  # a constant answer: MCC 0
    reference = majority_class_reference(
        [sst2, cola, stsb], [[1, 1, 0], [0, 0, 1], [1.0, 3.0]], [[0, 1, 1, 1], [0, 1], [0.5, 4.5]]
    )
    assert reference["tasks"]["sst2"]["answer"] == "positive" and reference["tasks"]["cola"]["answer"] == "unacceptable"
    assert reference["tasks"]["stsb"] == {"pearson": 0.0, "spearman": 0.0, "main": 0.0, "answer": 2.0}
    assert reference["average"] == pytest.approx(0.75 / 3)
    with pytest.raises(ValueError, match="at least one training label"):
        majority_class_metrics(sst2, [], [1])
