"""GLUE metrics with scikit-learn and scipy (no ``evaluate.load``, which downloads its scripts).

`compute_task_metrics` returns the task's GLUE metrics plus ``"main"``, the one number per task
that is averaged across tasks, following the GLUE leaderboard:

- ``mcc`` (CoLA): ``mcc``; main = the Matthews correlation.
- ``accuracy`` (SST-2, RTE, WNLI, QNLI, MNLI): ``accuracy``; main = accuracy.
- ``f1`` (MRPC, QQP): ``f1`` and ``accuracy``; main = their mean.
- ``pearson_spearman`` (STS-B): ``pearson`` and ``spearman``; main = their mean.
- ``f1_micro`` / ``f1_macro`` (multi-label tasks): ``f1_micro``, ``f1_macro`` and ``subset_accuracy`` (every label
  right) of the labels whose sigmoid reaches the threshold (0.5); main = the named F1.

F1 is binary F1 of class 1 for two classes, macro F1 for more. Degenerate inputs (constant
predictions or labels, a single example) give 0.0 rather than NaN, and no warning.

`majority_class_reference` is the floor a trained model should clear: every dev row answered with the training
set's most common class (its mean score for regression). train.py stores it in results.json, the app warns when a
model's dev average is close to it, and the quality benchmark prints it as its reference row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRICS: tuple[str, ...] = ("mcc", "accuracy", "f1", "pearson_spearman", "f1_micro", "f1_macro")
from modeling_camtl.pipeline_camtl import MULTI_LABEL_THRESHOLD  # noqa: E402  (one home: the pipeline's default)


class _HasMetric(Protocol):
    metric: str
    labels: tuple[str, ...]


def compute_task_metrics(task: _HasMetric | str, predictions: Any, labels: Any) -> dict[str, float]:
    """GLUE metrics of one task, with a ``"main"`` key.

    Args:
        task: a `camtl.tasks.TaskDef` or a metric name from `METRICS`.
        predictions: class ids (N,) or logits (N, C) for classification (argmax taken);
            scores (N,) or (N, 1) for regression.
            multi-label (``f1_micro``/``f1_macro``): 0/1 predictions or logits (N, L) (a logit counts when its
            sigmoid reaches `MULTI_LABEL_THRESHOLD`, i.e. logit >= 0 at 0.5; give 0/1 to use another threshold).
        labels: gold ids or scores (N,); float ids (as the collator makes them) are fine. Multi-label: multi-hot (N, L).
    """
    metric = task if isinstance(task, str) else task.metric
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; valid metrics: {list(METRICS)}.")
    preds = np.asarray(predictions)
    if metric in ("f1_micro", "f1_macro"):
        return multi_label_metrics(metric, preds, np.asarray(labels))
    golds = np.asarray(labels).reshape(-1)
    if metric == "pearson_spearman":
        return regression_metrics(preds.reshape(-1) if preds.ndim == 2 and preds.shape[1] == 1 else preds, golds)
    if preds.ndim == 2:
        preds = preds.argmax(axis=-1)  # (N, C) logits -> (N,) ids
    num_labels = None if isinstance(task, str) else len(task.labels) or None
    return classification_metrics(metric, preds, golds, num_labels)


def classification_metrics(
    metric: str, predictions: np.ndarray, labels: np.ndarray, num_labels: int | None = None
) -> dict[str, float]:
    """``mcc``, ``accuracy`` or ``f1`` (+ accuracy) of class ids, with ``"main"``."""
    preds, golds = _check_pair(predictions, labels)
    preds, golds = preds.astype(np.int64), golds.astype(np.int64)
    accuracy = float(accuracy_score(golds, preds))
    if metric == "accuracy":
        return {"accuracy": accuracy, "main": accuracy}
    if metric == "mcc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcc = _finite(matthews_corrcoef(golds, preds))
        return {"mcc": mcc, "main": mcc}
    if metric == "f1":
        if num_labels is None:
            num_labels = int(max(preds.max(), golds.max())) + 1
        average = "binary" if num_labels <= 2 else "macro"
        f1 = _finite(f1_score(golds, preds, average=average, zero_division=0.0))
        return {"f1": f1, "accuracy": accuracy, "main": (f1 + accuracy) / 2}
    raise ValueError(f"{metric!r} is not a classification metric; valid: ['mcc', 'accuracy', 'f1'].")


def multi_label_metrics(metric: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Micro and macro F1 and subset accuracy of a multi-label task, with ``"main"`` the one ``metric`` names.

    ``predictions`` (N, L): 0/1, or logits (any other value; a label is predicted when its sigmoid reaches
    `MULTI_LABEL_THRESHOLD`); ``labels`` (N, L) multi-hot."""
    preds, golds = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if preds.ndim != 2 or preds.shape != golds.shape or len(preds) == 0:
        raise ValueError(
            f"multi-label predictions and labels must both have shape (N, labels), N > 0; got "
            f"{preds.shape} and {golds.shape}"
        )
    if not np.isin(preds, (0.0, 1.0)).all():
        preds = 1 / (1 + np.exp(-preds)) >= MULTI_LABEL_THRESHOLD  # logits
    preds, golds = preds.astype(np.int64), (golds >= 0.5).astype(np.int64)
    scores = {
        f"f1_{average}": _finite(f1_score(golds, preds, average=average, zero_division=0.0))
        for average in ("micro", "macro")
    }
    scores["subset_accuracy"] = float((preds == golds).all(axis=1).mean())
    return {**scores, "main": scores[metric]}


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations and their mean (``"main"``); 0.0 when undefined."""
    preds, golds = _check_pair(predictions, labels)
    preds, golds = preds.astype(np.float64), golds.astype(np.float64)
    if len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(golds) == 0 or not np.all(np.isfinite(preds)):
        pearson = spearman = 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pearson = _finite(pearsonr(preds, golds)[0])
            spearman = _finite(spearmanr(preds, golds)[0])
    return {"pearson": pearson, "spearman": spearman, "main": (pearson + spearman) / 2}


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of the ``"main"`` scores of several tasks (``{task: compute_task_metrics(...)}``)."""
    if not results:
        raise ValueError("glue_average needs the results of at least one task.")
    return float(np.mean([r["main"] for r in results.values()]))


def majority_class_metrics(task: _HasMetric | str, train_labels: Any, dev_labels: Any) -> dict[str, Any]:
    """The task's metrics (with ``"main"``) when every dev row gets one constant answer, and that ``"answer"``: the
    training labels' most common class id, for regression their mean score (correlations are then 0), for a
    multi-label task the 0/1 of each label held by more than half the training rows."""
    metric = task if isinstance(task, str) else task.metric
    if metric in ("f1_micro", "f1_macro"):  # multi-label: each label on when most training rows have it
        train, dev = np.asarray(train_labels, dtype=np.float64), np.asarray(dev_labels, dtype=np.float64)
        if train.ndim != 2 or len(train) == 0:
            raise ValueError("majority_class_metrics needs at least one multi-hot training row (N, labels).")
        on = (train.mean(axis=0) > 0.5).astype(np.int64)  # (L,)
        return {**compute_task_metrics(metric, np.tile(on, (len(dev), 1)), dev), "answer": on.tolist()}
    train = np.asarray(train_labels, dtype=np.float64).reshape(-1)
    dev = np.asarray(dev_labels).reshape(-1)
    if len(train) == 0:
        raise ValueError("majority_class_metrics needs at least one training label.")
    if metric == "pearson_spearman":
        answer: float | int = float(train.mean())
    else:
        answer = int(np.bincount(train.astype(np.int64)).argmax())
    return {**compute_task_metrics(task, np.full(len(dev), answer), dev), "answer": answer}


def majority_class_reference(tasks: Any, train_labels: Any, dev_labels: Any) -> dict[str, Any]:
    """`majority_class_metrics` of several tasks (parallel sequences: `TaskDef`s, their training labels and their
    dev labels), as results.json stores it: ``{"tasks": {name: {..., "main", "answer"}}, "average": mean main}``.
    A classification answer is given by its label name when the task names its labels."""
    out = {}
    for task, train, dev in zip(tasks, train_labels, dev_labels, strict=True):
        metrics = majority_class_metrics(task, train, dev)
        labels = getattr(task, "labels", ())
        if labels and isinstance(metrics["answer"], int):
            metrics["answer"] = labels[metrics["answer"]]
        elif labels and isinstance(metrics["answer"], list):  # multi-label: the names of the labels answered
            metrics["answer"] = [name for name, on in zip(labels, metrics["answer"]) if on]
        out[task.name] = metrics
    return {"tasks": out, "average": glue_average(out)}


def majority_class_from_data(tasks: Any, data_dir: str | None) -> dict[str, Any]:
    """`majority_class_reference` of `TaskDef`s read from their train and dev splits (``camtl.tasks.load_split``)."""
    from camtl.tasks import load_split  # camtl.tasks reads files: imported only here

    splits = [[load_split(task, split, data_dir)["label"] for task in tasks] for split in ("train", "validation")]
    return majority_class_reference(tasks, *splits)


def _check_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as 1-D arrays of the same, non-zero length."""
    preds, golds = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} labels.")
    if len(preds) == 0:
        raise ValueError("No predictions to score.")
    return preds, golds


def _finite(x: float) -> float:
    """``x`` as a float, or 0.0 when NaN/inf."""
    x = float(x)
    return x if math.isfinite(x) else 0.0


__all__ = [
    "METRICS",
    "MULTI_LABEL_THRESHOLD",
    "classification_metrics",
    "compute_task_metrics",
    "glue_average",
    "majority_class_from_data",
    "majority_class_metrics",
    "majority_class_reference",
    "multi_label_metrics",
    "regression_metrics",
]
