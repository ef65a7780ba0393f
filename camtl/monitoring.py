"""Watching a served CA-MTL model: per-task drift and out-of-distribution alarms, and a label-free accuracy estimate.

    python -m camtl.monitoring build MODEL_FOLDER --data-dir ../shared/data/glue   # a reference for a trained model
    python -m camtl.monitoring build-default                                        # the shipped default model's

A **reference** (:class:`Reference`, saved beside the weights as ``monitoring_reference.safetensors`` + ``.json``,
well under 1 MB for five tasks) holds, per task, what the model does on rows it did not train on (held-out rows):

| part | what |
|---|---|
| ``logits`` | the head's outputs on the held-out rows (n, K): predicted probabilities, entropy, labels |
| ``temperature`` | temperature scaling fitted on those rows (minimum NLL): calibrated confidences |
| ``pca_components``, ``pca_mean`` | a PCA basis of the pooled vector the head reads, fitted on TRAINING rows (1) |
| ``reduced`` | the held-out rows' pooled vectors in that basis (n, d) |
| ``lengths``, ``unk_share`` | tokens per input; share of ``[UNK]`` among its non-special tokens |

(1) Not on the held-out rows: a basis fitted on the reference rows fits them better than fresh rows of the same
distribution, which then look shifted. An input longer than the training length (``train_max_length``) counts as
truncated.

It carries a fingerprint per task of every weight that task's outputs depend on (the shared encoder, the task's
embedding row and head), so a reference made for other weights is refused (:class:`StaleReferenceError`), while
adding a task (which leaves the old tasks' outputs bit-identical) keeps the old tasks' references valid.

The **monitor** (:class:`Monitor`) keeps, per task, a window of the latest requests (``window``, default 200) and
compares it with the reference:

| signal | test | effect size |
|---|---|---|
| ``probabilities`` | Kolmogorov-Smirnov, two samples, on the calibrated probability (2) | KS statistic D |
| ``labels`` | chi-square of homogeneity: the window's predicted labels against the reference's (3) | Cramer's V |
| ``representation`` | MMD (RBF kernel, median bandwidth) of the reduced pooled vectors, permutation p (4) | MMD^2 |
| ``length`` | Kolmogorov-Smirnov on the input lengths in tokens | KS statistic D |
| ``out_of_distribution`` | Fisher's exact test: the share of flagged requests against the reference's (5) | ratio |

(2) Of the second label (two labels), of the top label (more), or the predicted score (regression). (3) Regression:
the reference's quintiles of the predicted score. (4) The bandwidth is the median distance of the pooled sample, so
that the permutation test is exact. (5) The reference rows' own flags, each row's distance taken to the others.
Every test compares two samples: the window with the reference rows, whose own sampling noise counts too (a test
against the reference's shares taken as exact raised 6-19% false alarms on windows of 200, BENCHMARKS.md).

The window is **alarm** when one signal's p-value, Bonferroni-corrected over the signals, is below ``alpha`` (0.05),
**warn** when one is below ``warn_alpha`` (0.2) after correction or when the estimated accuracy is more than
``accuracy_drop`` (5 points) below the reference's accuracy, else **ok**. The estimated accuracy is ATC's (Garg et
al., ICLR 2022, "average thresholded confidence"): the share of the window's answers whose calibrated confidence is
above the threshold at which the held-out rows' share equals their accuracy. The mean calibrated confidence is given
beside it; under shift it overestimates more (CR product reviews sent to SST-2: BENCHMARKS.md). Each status
carries its reasons and the window's most atypical inputs (farthest from the reference).

Each request also gets a cheap **out-of-distribution flag** (:meth:`Monitor.observe` returns it): more than
``max_unk_share`` (0.5) of its tokens unknown, or its reduced pooled vector farther from the reference rows (mean
distance to its ``k`` = 5 nearest) than all but ``flag_quantile`` (0.5%) of the reference rows are from each other.

The monitor is fed by :meth:`Monitor.attach` (forward hooks on the model: the pipeline, the app or a user's own server
feed it by running the model) or by :meth:`Monitor.observe` with the logits, pooled vectors and token ids.

Multi-label tasks (``kind: multi_label``) get no reference, so they are not monitored (:data:`MULTI_LABEL_NOT_MONITORED`
says why; train.py logs it, ``build_reference`` refuses them, the monitor skips their rows).

Statistics come from scipy (KS, chi-square, Fisher) and scikit-learn (PCA); the MMD permutation test is a few lines
of numpy. Libraries weighed, and why none is a dependency: Evidently (Apache-2.0) and NannyML (Apache-2.0) are
dashboards over pandas frames with large dependency trees, heavy for a library that serves a model (NannyML's
accuracy estimate, CBPE, is our mean calibrated confidence); alibi-detect is under the Business Source License 1.1
since January 2024 (not open source for production use) and does not support numpy 2 (SeldonIO/alibi-detect#902);
Frouros (BSD-3) has the tests we use but adds little over scipy; River (BSD-3) targets streaming learners and
one-stream drift detectors, not two-sample tests against a reference. Measured figures (false
alarms, detection power, estimated against real accuracy): BENCHMARKS.md, "Monitoring".
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy import optimize, stats
from sklearn.decomposition import PCA

REFERENCE_STEM = "monitoring_reference"
FORMAT_VERSION = 1
SIGNALS = ("probabilities", "labels", "representation", "length", "out_of_distribution")
STATUSES = ("ok", "warn", "alarm")
MIN_REFERENCE_ROWS = 10
#: Why a multi-label task has no reference (it is then not monitored; the monitor skips its rows).
MULTI_LABEL_NOT_MONITORED = (
    "multi-label tasks are not monitored: the signals, calibration and accuracy estimate "
    "assume one softmax answer per row, not a sigmoid per label"
)
RECENT_FLAGS = 1024  # flags kept for Monitor.flag_for
TEXT_CHARS = 200  # an atypical input is shown by its first characters
ARRAYS = ("logits", "reduced", "lengths", "unk_share", "pca_components", "pca_mean")


class StaleReferenceError(ValueError):
    """The reference was made for other weights (or another task table) than the model's."""


# --------------------------------------------------------------------------------------------------------------------
# What the model does on some rows
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Features:
    """One task's rows as the model saw them: ``logits`` (n, K), ``pooled`` (n, H) or None, ``lengths`` (n,) tokens
    (special tokens included), ``unk_share`` (n,), and the texts when known."""

    logits: np.ndarray
    pooled: np.ndarray | None
    lengths: np.ndarray
    unk_share: np.ndarray
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.logits)

    def take(self, index) -> Features:
        index = np.asarray(index)
        return Features(
            self.logits[index],
            None if self.pooled is None else self.pooled[index],
            self.lengths[index],
            self.unk_share[index],
            None if self.texts is None else [self.texts[i] for i in index],
        )

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        texts = None if any(p.texts is None for p in parts) else [t for p in parts for t in p.texts]
        pooled = None if any(p.pooled is None for p in parts) else np.concatenate([p.pooled for p in parts])
        return Features(
            np.concatenate([p.logits for p in parts]),
            pooled,
            np.concatenate([p.lengths for p in parts]),
            np.concatenate([p.unk_share for p in parts]),
            texts,
        )


def token_descriptors(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer
) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, unk_share)`` of a padded batch (B, T): tokens per row, and the share of ``[UNK]`` among the tokens
    that are not special (``[UNK]`` is itself one of ``tokenizer.all_special_ids``, so it is kept out of that set)."""
    unk = tokenizer.unk_token_id
    special = torch.tensor(sorted(set(tokenizer.all_special_ids) - {unk}), dtype=input_ids.dtype)
    mask = attention_mask.bool()  # (B, T)
    content = mask & ~torch.isin(input_ids, special)  # (B, T)
    unknown = content & (input_ids == unk) if unk is not None else torch.zeros_like(content)  # (B, T)
    lengths = mask.sum(1)  # (B,)
    share = unknown.sum(1).float() / content.sum(1).clamp(min=1).float()  # (B,)
    return lengths.numpy(), share.numpy()


def _encoder(model):
    """The encoder module whose output carries ``pooler_output`` (the vector the heads read)."""
    encoder = getattr(model, "bert", None)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no .bert encoder: not a CaMtlForMultiTask model")
    return encoder


@contextlib.contextmanager
def capture_pooled(model):
    """``with capture_pooled(model) as seen:`` every forward of the model appends its pooled vectors (B, H) to
    ``seen``."""
    seen = []
    handle = _encoder(model).register_forward_hook(
        lambda module, args, output: seen.append(output.pooler_output.detach().float().cpu())
    )
    try:
        yield seen
    finally:
        handle.remove()


def reading_limit(model, tokenizer) -> int:
    """The longest input (tokens) the model reads: its position table, or the tokenizer's limit when smaller."""
    limit = model.config.max_position_embeddings
    tok = getattr(tokenizer, "model_max_length", None)
    return min(limit, tok) if isinstance(tok, int) and tok > 0 else limit


def extract_features(
    model, tokenizer, task: str, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int = 32
) -> Features:
    """What ``model`` computes for ``task`` on ``texts`` (and ``text_pairs`` for a pair task), as served: inputs cut at
    the model's reading limit, fp32, eval mode, in length-sorted batches."""
    task_id = model.config.task_id(task)
    limit = reading_limit(model, tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(text_pairs[i]) if text_pairs else 0))
    logits, pooled, lengths, unk = [], [], [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), capture_pooled(model) as seen:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            a = [texts[i] for i in chunk]
            b = [text_pairs[i] for i in chunk] if text_pairs is not None else None
            enc = tokenizer(a, b, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            out = model(
                **{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")},
                task_ids=torch.full((len(chunk),), task_id, dtype=torch.long),
            )
            width = _num_outputs(model.config.tasks[task_id])
            logits.append(out.logits[:, :width].float().cpu().numpy())  # (b, K)
            pooled.append(seen.pop().numpy())  # (b, H)
            n, s = token_descriptors(enc["input_ids"], enc["attention_mask"], tokenizer)
            lengths.append(n)
            unk.append(s)
    model.train(was_training)
    back = np.argsort(order)
    joined = [np.concatenate(x)[back] for x in (logits, pooled, lengths, unk)]
    shown = [t if text_pairs is None else f"{t} || {text_pairs[i]}" for i, t in enumerate(texts)]
    return Features(
        joined[0].astype(np.float32),
        joined[1].astype(np.float32),
        joined[2].astype(np.int32),
        joined[3].astype(np.float32),
        shown,
    )


def _num_outputs(spec: Mapping) -> int:
    return len(spec["labels"]) if spec["kind"] == "classification" else 1


# --------------------------------------------------------------------------------------------------------------------
# Fingerprints, calibration
# --------------------------------------------------------------------------------------------------------------------
TASK_EMBEDDING = "bert.camtl_task.embedding.weight"


def task_fingerprints(model) -> dict[str, str]:
    """Per task, sha256 of every tensor its outputs depend on: the shared tensors (all but the heads and the task
    embedding table), its row of the task embedding, its head, and its spec. Adding a task changes none of the old
    tasks' fingerprints; changing any shared weight changes them all."""
    state = model.state_dict()
    shared = hashlib.sha256()
    for name in sorted(n for n in state if not n.startswith("heads.") and n != TASK_EMBEDDING):
        _hash_tensor(shared, name, state[name])
    prints = {}
    for i, spec in enumerate(model.config.tasks):
        digest = shared.copy()
        digest.update(json.dumps(spec, sort_keys=True).encode())
        _hash_tensor(digest, f"{TASK_EMBEDDING}[{i}]", state[TASK_EMBEDDING][i])
        for name in sorted(n for n in state if n.startswith(f"heads.{spec['name']}.")):
            _hash_tensor(digest, name, state[name])
        prints[spec["name"]] = digest.hexdigest()
    return prints


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature  # (n, K)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the ``T`` in [0.05, 20] minimising the NLL of ``softmax(logits / T)``
    on held-out rows."""
    labels = labels.astype(int)

    def nll(log_t: float) -> float:
        p = softmax(logits, math.exp(log_t))[np.arange(len(labels)), labels]
        return float(-np.log(np.clip(p, 1e-12, None)).mean())

    return float(math.exp(optimize.minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded").x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top label over ``bins`` equal-width confidence bins."""
    conf, right = probs.max(-1), probs.argmax(-1) == labels
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(right[edges == b].mean() - conf[edges == b].mean()) * (edges == b).mean()
            for b in range(bins)
            if (edges == b).any()
        )
    )


def knn_distance(queries: np.ndarray, points: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    """Mean Euclidean distance of each query (m, d) to its ``k`` nearest ``points`` (n, d); ``leave_one_out``: the
    queries are the points, each one's distance to itself left out."""
    d2 = (queries**2).sum(1)[:, None] + (points**2).sum(1)[None, :] - 2 * queries @ points.T  # (m, n)
    d = np.sqrt(np.clip(d2, 0, None))
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    k = min(k, d.shape[1] - int(leave_one_out))
    return np.sort(d, axis=1)[:, :k].mean(1)


# --------------------------------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class TaskReference:
    """One task's reference: the held-out rows' outputs and descriptors, the PCA basis, calibration and thresholds."""

    spec: dict
    logits: np.ndarray  # (n, K)
    reduced: np.ndarray  # (n, d)
    lengths: np.ndarray  # (n,)
    unk_share: np.ndarray  # (n,)
    pca_components: np.ndarray  # (d, H)
    pca_mean: np.ndarray  # (H,)
    meta: dict = field(default_factory=dict)  # temperature, accuracy, thresholds, rows, ...

    @property
    def regression(self) -> bool:
        return self.spec["kind"] == "regression"

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    def reduce(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled vectors (m, H) in the reference's PCA basis (m, d)."""
        return (pooled - self.pca_mean) @ self.pca_components.T

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (m, K) of classification logits."""
        return softmax(logits, self.temperature)

    def score(self, logits: np.ndarray) -> np.ndarray:
        """The scalar the KS test compares: the calibrated probability of the second label (two labels), of the top
        label (more), or the predicted score (regression)."""
        if self.regression:
            return logits[:, 0]
        probs = self.probabilities(logits)
        return probs[:, 1] if probs.shape[1] == 2 else probs.max(-1)

    def label_bins(self, logits: np.ndarray) -> np.ndarray:
        """Each row's category for the chi-square: its predicted label, or (regression) the quintile of the
        reference's predicted scores its score falls in."""
        if self.regression:
            return np.searchsorted(np.asarray(self.meta["score_quintiles"]), logits[:, 0])
        return logits.argmax(-1)

    @property
    def num_bins(self) -> int:
        return len(self.meta["score_quintiles"]) + 1 if self.regression else len(self.spec["labels"])

    def distance(self, reduced: np.ndarray) -> np.ndarray:
        return knn_distance(reduced, self.reduced, self.meta["k"])

    def loo_flags(self, max_unk_share: float = 0.5) -> np.ndarray:
        """The reference rows' own out-of-distribution flags (n,), each row's distance taken to the others."""
        if getattr(self, "_loo", None) is None:
            self._loo = knn_distance(self.reduced, self.reduced, self.meta["k"], leave_one_out=True)
        return (self.unk_share > max_unk_share) | (self._loo > self.meta["distance_threshold"])

    @classmethod
    def from_features(
        cls,
        spec: Mapping,
        held_out: Features,
        labels: np.ndarray | None,
        train_pooled: np.ndarray,
        components: int = 16,
        k: int = 5,
        flag_quantile: float = 0.005,
        train_max_length: int | None = None,
        seed: int = 0,
    ) -> TaskReference:
        """Build from features: ``held_out`` (rows the model did not train on, with their ``labels`` for the
        calibration; None: no calibration), ``train_pooled`` (n, H): pooled vectors of TRAINING rows for the PCA."""
        if len(held_out) < MIN_REFERENCE_ROWS:
            raise ValueError(
                f"Task {spec['name']!r}: a reference needs at least {MIN_REFERENCE_ROWS} held-out rows, "
                f"got {len(held_out)}"
            )
        pca = PCA(n_components=min(components, *train_pooled.shape), random_state=seed).fit(train_pooled)
        ref = cls(
            dict(spec),
            held_out.logits.astype(np.float32),
            np.zeros((0, 0), np.float32),
            held_out.lengths.astype(np.int32),
            held_out.unk_share.astype(np.float32),
            pca.components_.astype(np.float32),
            pca.mean_.astype(np.float32),
        )
        ref.reduced = ref.reduce(held_out.pooled).astype(np.float32)
        meta = {
            "rows": len(held_out),
            "train_rows": int(train_pooled.shape[0]),
            "k": k,
            "flag_quantile": flag_quantile,
            "explained_variance": float(pca.explained_variance_ratio_.sum()),
            "train_max_length": train_max_length,
        }
        if spec["kind"] == "classification" and labels is not None:
            labels = np.asarray(labels).astype(int)
            raw = softmax(held_out.logits)
            meta["temperature"] = fit_temperature(held_out.logits, labels)
            calibrated = softmax(held_out.logits, meta["temperature"])
            meta["accuracy"] = float((held_out.logits.argmax(-1) == labels).mean())
            meta["ece_before"] = expected_calibration_error(raw, labels)
            meta["ece_after"] = expected_calibration_error(calibrated, labels)
            meta["estimated_accuracy"] = float(calibrated.max(-1).mean())
            # ATC (Garg et al., ICLR 2022): the confidence above which as many held-out rows lie as were right
            meta["atc_threshold"] = float(np.quantile(calibrated.max(-1), 1 - meta["accuracy"]))
        if spec["kind"] == "regression":
            meta["score_quintiles"] = np.quantile(held_out.logits[:, 0], [0.2, 0.4, 0.6, 0.8]).tolist()
        ref.meta = meta
        counts = np.bincount(ref.label_bins(ref.logits), minlength=ref.num_bins)
        meta["label_share"] = (counts / len(held_out)).tolist()
        loo = knn_distance(ref.reduced, ref.reduced, k, leave_one_out=True)
        meta["distance_threshold"] = float(np.quantile(loo, 1 - flag_quantile))
        limit = train_max_length or int(ref.lengths.max()) + 1
        meta["truncation_rate"] = float((ref.lengths > limit).mean())
        meta["mean_length"] = float(ref.lengths.mean())
        meta["mean_unk_share"] = float(ref.unk_share.mean())
        return ref


def _median_distance(x: np.ndarray, seed: int, rows: int = 500) -> float:
    """Median pairwise distance of (a sample of) ``x``: the RBF kernel's bandwidth."""
    rng = np.random.default_rng(seed)
    sample = x[rng.permutation(len(x))[:rows]]
    d = np.sqrt(np.clip(((sample[:, None] - sample[None]) ** 2).sum(-1), 0, None))
    return float(np.median(d[np.triu_indices(len(sample), 1)]))


@dataclass
class Reference:
    """The references of a model's tasks, with the fingerprints of the weights they were made for."""

    tasks: dict[str, TaskReference]
    fingerprints: dict[str, str]
    meta: dict = field(default_factory=dict)

    def save(self, folder) -> tuple[Path, Path]:
        """Write ``monitoring_reference.safetensors`` and ``.json`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"{name}.{part}": np.ascontiguousarray(getattr(ref, part))
            for name, ref in self.tasks.items()
            for part in ARRAYS
        }
        tensors, meta = folder / f"{REFERENCE_STEM}.safetensors", folder / f"{REFERENCE_STEM}.json"
        save_file(arrays, str(tensors), metadata={"format": str(FORMAT_VERSION)})
        body = {
            "format": FORMAT_VERSION,
            **self.meta,
            "tasks": {
                name: {"spec": ref.spec, "fingerprint": self.fingerprints[name], **ref.meta}
                for name, ref in self.tasks.items()
            },
        }
        meta.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        return tensors, meta

    @classmethod
    def load(cls, folder, model=None) -> Reference:
        """Read a saved reference; with ``model``, check it was made for its weights: :class:`StaleReferenceError`
        naming the tasks whose weights changed (a task the reference lacks is simply not monitored)."""
        folder = Path(folder)
        tensors, meta_file = folder / f"{REFERENCE_STEM}.safetensors", folder / f"{REFERENCE_STEM}.json"
        if not tensors.is_file() or not meta_file.is_file():
            raise FileNotFoundError(
                f"No monitoring reference in {folder} (expected {tensors.name} and "
                f"{meta_file.name}); make one with `python -m camtl.monitoring build {folder}`"
            )
        body = json.loads(meta_file.read_text(encoding="utf-8"))
        if body.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: monitoring reference format {body.get('format')!r}, this version reads "
                f"{FORMAT_VERSION}; rebuild it with `python -m camtl.monitoring build`"
            )
        arrays = load_file(str(tensors))
        tasks, prints = {}, {}
        for name, entry in body.pop("tasks").items():
            entry = dict(entry)
            spec, prints[name] = entry.pop("spec"), entry.pop("fingerprint")
            tasks[name] = TaskReference(spec, *(arrays[f"{name}.{part}"] for part in ARRAYS), meta=entry)
        reference = cls(tasks, prints, body)
        if model is not None:
            reference.check(model)
        return reference

    def check(self, model) -> None:
        """:class:`StaleReferenceError` when a task's weights (or spec) differ from those the reference was made for."""
        current = task_fingerprints(model)
        stale = sorted(name for name in self.tasks if name in current and current[name] != self.fingerprints[name])
        gone = sorted(set(self.tasks) - set(current))
        if stale or gone:
            what = []
            if stale:
                what.append(
                    f"the weights behind task(s) {stale} differ from those it was made for (the model was "
                    "trained further, or it is another model)"
                )
            if gone:
                what.append(f"task(s) {gone} are not in the model (its tasks: {sorted(current)})")
            raise StaleReferenceError(
                "Stale monitoring reference (made "
                + str(self.meta.get("created", "at an unknown time"))
                + "): "
                + "; ".join(what)
                + ". Rebuild it: `python -m camtl.monitoring build MODEL_FOLDER` (train.py writes "
                "one at the end of training)."
            )


def find_reference(model_folder) -> Path | None:
    """Where the reference of a model folder lies: the folder itself, or for the default model's rebuilt folder
    (``camtl.default_model``: ``default-model-<sha>`` in the cache) the repository's ``default_model/``; None when
    there is none."""
    folder = Path(str(model_folder))
    if (folder / f"{REFERENCE_STEM}.json").is_file():
        return folder
    if folder.name.startswith("default-model-"):
        from .default_model import DEFAULT_MODEL_DIR

        if (DEFAULT_MODEL_DIR / f"{REFERENCE_STEM}.json").is_file():
            return DEFAULT_MODEL_DIR
    return None


def build_reference(
    model,
    tokenizer,
    held_out: Mapping[str, Any],
    train: Mapping[str, Any],
    components: int = 16,
    k: int = 5,
    flag_quantile: float = 0.005,
    train_max_length: int | None = None,
    batch_size: int = 32,
    source: str | None = None,
) -> Reference:
    """A :class:`Reference` for ``model`` from rows per task: ``held_out[task]`` (rows it did not train on, with labels:
    a `camtl.tasks.load_split` dataset, or a list of ``{"text_a", "text_b", "label"}``) and ``train[task]`` (training
    rows, for the PCA basis only; their labels are not read). ``train_max_length``: the length it was trained on
    (longer inputs count as truncated)."""
    tasks, fingerprints = {}, task_fingerprints(model)
    specs = {t["name"]: t for t in model.config.tasks}
    for name in held_out:
        if name not in specs:
            raise ValueError(f"Unknown task {name!r}; the model's tasks: {list(specs)}")
        if name not in train:
            raise ValueError(f"Task {name!r}: training rows are needed too (the PCA basis is fitted on them)")
        if specs[name]["kind"] == "multi_label":
            raise ValueError(f"Task {name!r}: {MULTI_LABEL_NOT_MONITORED}")
        rows = _rows(held_out[name])
        feats = extract_features(model, tokenizer, name, rows[0], rows[1], batch_size)
        train_rows = _rows(train[name])
        train_feats = extract_features(model, tokenizer, name, train_rows[0], train_rows[1], batch_size)
        tasks[name] = TaskReference.from_features(
            specs[name], feats, rows[2], train_feats.pooled, components, k, flag_quantile, train_max_length
        )
    return Reference(
        tasks,
        {n: fingerprints[n] for n in tasks},
        {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "reading_limit": reading_limit(model, tokenizer),
        },
    )


def _rows(rows) -> tuple[list[str], list[str] | None, np.ndarray]:
    """``(texts, text pairs or None, labels)`` of a `load_split` dataset or a list of row dicts."""
    if hasattr(rows, "column_names"):
        a, b, y = rows["text_a"], rows["text_b"] if "text_b" in rows.column_names else None, rows["label"]
    else:
        a = [r["text_a"] for r in rows]
        b = [r.get("text_b") for r in rows]
        y = [r.get("label") for r in rows]
    b = None if b is None or not any(b) else list(b)
    return list(a), b, np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------------
# Two-sample tests
# --------------------------------------------------------------------------------------------------------------------
def mmd_test(x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int, rng) -> tuple[float, float]:
    """``(MMD^2, permutation p-value)`` of samples ``x`` (n, d) and ``y`` (m, d) with an RBF kernel (biased estimate;
    the p-value counts the observed split among the permutations)."""
    z = np.concatenate([x, y])  # (N, d)
    d2 = np.clip((z**2).sum(1)[:, None] + (z**2).sum(1)[None] - 2 * z @ z.T, 0, None)  # (N, N)
    kernel = np.exp(-d2 / (2 * bandwidth**2))
    n, big_n = len(x), len(z)
    signs = np.empty((big_n, permutations + 1))  # (N, P+1): +1/n on one side, -1/m on the other
    signs[:, 0] = np.r_[np.full(n, 1 / n), np.full(big_n - n, -1 / (big_n - n))]
    for j in range(1, permutations + 1):
        signs[:, j] = signs[rng.permutation(big_n), 0]
    stats_ = ((kernel @ signs) * signs).sum(0)  # (P+1,) a' K a per split
    return float(stats_[0]), float((stats_ >= stats_[0]).mean())


@dataclass
class Test:
    signal: str
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    detail: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TaskStatus:
    """A task's status over its window: ``status`` (ok / warn / alarm), ``reasons``, every ``tests`` entry,
    ``estimated_accuracy`` (the mean calibrated confidence; None for regression), the reference's accuracy, the
    ``accuracy_estimates`` (that one and ATC's: the share of answers above the confidence threshold at which the
    held-out rows' share equals their accuracy), descriptors and ``atypical`` inputs."""

    task: str
    status: str
    reasons: list[str]
    requests: int
    window: int
    tests: list[Test] = field(default_factory=list)
    estimated_accuracy: float | None = None
    reference_accuracy: float | None = None
    accuracy_estimates: dict = field(default_factory=dict)  # average_confidence (= estimated_accuracy), ATC's
    descriptors: dict = field(default_factory=dict)
    atypical: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "tests"}, "tests": [t.as_dict() for t in self.tests]}


def compare(
    ref: TaskReference,
    window: Features,
    alpha: float = 0.05,
    warn_alpha: float = 0.2,
    accuracy_drop: float = 0.05,
    permutations: int = 200,
    max_unk_share: float = 0.5,
    mmd_rows: int = 400,
    atypical: int = 5,
    seed: int = 0,
    min_window: int = 30,
    requests: int | None = None,
) -> TaskStatus:
    """The status of one window of a task's requests against its reference (what :meth:`Monitor.status` computes;
    benchmarks call it on windows of their own)."""
    n = len(window)
    name = ref.spec["name"]
    base = dict(
        task=name,
        requests=requests if requests is not None else n,
        window=n,
        reference_accuracy=ref.meta.get("accuracy"),
    )
    if n < min_window:
        return TaskStatus(status="ok", reasons=[f"too few requests to judge ({n} of at least {min_window})"], **base)
    rng = np.random.default_rng(seed)
    tests = []
    d = stats.ks_2samp(ref.score(ref.logits), ref.score(window.logits))
    tests.append(
        Test(
            "probabilities",
            float(d.statistic),
            float(d.pvalue),
            float(d.statistic),
            "KS D",
            "predicted score" if ref.regression else "calibrated probability",
        )
    )
    counts = np.bincount(ref.label_bins(window.logits), minlength=ref.num_bins)
    table = np.stack([np.bincount(ref.label_bins(ref.logits), minlength=ref.num_bins), counts])  # (2, bins)
    table = table[:, table.sum(0) > 0]
    chi, p = (0.0, 1.0) if table.shape[1] < 2 else stats.chi2_contingency(table, correction=False)[:2]
    tests.append(
        Test(
            "labels",
            float(chi),
            float(p),
            math.sqrt(float(chi) / table.sum()),
            "Cramer's V",
            "window shares " + ", ".join(f"{c / n:.2f}" for c in counts),
        )
    )
    reduced = None
    if window.pooled is not None:
        reduced = ref.reduce(window.pooled)
        sample = ref.reduced[np.random.default_rng(seed).permutation(len(ref.reduced))[:mmd_rows]]
        bandwidth = _median_distance(np.concatenate([sample, reduced]), seed)  # of the pooled sample: exact test
        mmd2, p = mmd_test(sample, reduced, bandwidth, permutations, rng)
        tests.append(Test("representation", mmd2, p, mmd2, "MMD^2", f"{permutations} permutations"))
    d = stats.ks_2samp(ref.lengths, window.lengths)
    tests.append(
        Test(
            "length",
            float(d.statistic),
            float(d.pvalue),
            float(d.statistic),
            "KS D",
            f"mean {window.lengths.mean():.1f} tokens (reference {ref.lengths.mean():.1f})",
        )
    )
    flags = flag(ref, window.unk_share, reduced, max_unk_share)
    share, flagged = float(flags.mean()), int(flags.sum())
    ref_flagged = int(ref.loo_flags(max_unk_share).sum())  # the reference rows' own flags, each left out in turn
    p = float(
        stats.fisher_exact(
            [[flagged, n - flagged], [ref_flagged, len(ref.logits) - ref_flagged]], alternative="greater"
        )[1]
    )
    ratio = share / ((ref_flagged + 0.5) / (len(ref.logits) + 1))
    tests.append(
        Test(
            "out_of_distribution",
            share,
            p,
            ratio,
            "x reference share",
            f"{flagged} of {n} requests flagged (reference: {ref_flagged} of {len(ref.logits)})",
        )
    )

    m = len(tests)
    reasons, level = [], 0
    for t in tests:
        corrected = min(1.0, t.p_value * m)
        if corrected < alpha:
            level = 2
            reasons.append(
                f"{t.signal}: p = {t.p_value:.2g} (Bonferroni x{m}: {corrected:.2g} < {alpha}), "
                f"{t.effect_name} {t.effect:.3g}"
            )
        elif corrected < warn_alpha:
            level = max(level, 1)
            reasons.append(f"{t.signal}: p = {t.p_value:.2g} (Bonferroni x{m}: {corrected:.2g} < {warn_alpha})")
    estimated, estimates = None, {}
    if not ref.regression:
        confidence = ref.probabilities(window.logits).max(-1)  # (n,)
        estimates = {"average_confidence": float(confidence.mean())}
        if "atc_threshold" in ref.meta:
            estimates["thresholded_confidence"] = float((confidence > ref.meta["atc_threshold"]).mean())
        estimated = estimates.get("thresholded_confidence", estimates["average_confidence"])
        reference = ref.meta.get("accuracy")
        if reference is not None and estimated < reference - accuracy_drop:
            level = max(level, 1)
            reasons.append(
                f"estimated accuracy {estimated:.3f}, {reference - estimated:.3f} below the reference's {reference:.3f}"
            )
    limit = ref.meta.get("train_max_length") or math.inf
    descriptors = {
        "mean_length": float(window.lengths.mean()),
        "truncation_rate": float((window.lengths > limit).mean()),
        "mean_unk_share": float(window.unk_share.mean()),
        "flagged_share": share,
        "reference": {k: ref.meta.get(k) for k in ("mean_length", "truncation_rate", "mean_unk_share")},
    }
    odd = []
    if reduced is not None or window.texts is not None:
        dist = ref.distance(reduced) if reduced is not None else window.unk_share
        for i in np.argsort(-dist)[:atypical]:
            odd.append(
                {
                    "text": (window.texts[i][:TEXT_CHARS] if window.texts else None),
                    "distance": float(dist[i]),
                    "unk_share": float(window.unk_share[i]),
                    "flagged": bool(flags[i]),
                }
            )
    return TaskStatus(
        status=STATUSES[level],
        reasons=reasons or ["no signal differs from the reference"],
        tests=tests,
        estimated_accuracy=estimated,
        accuracy_estimates=estimates,
        descriptors=descriptors,
        atypical=odd,
        **base,
    )


def flag(
    ref: TaskReference, unk_share: np.ndarray, reduced: np.ndarray | None, max_unk_share: float = 0.5
) -> np.ndarray:
    """The per-request out-of-distribution flag (m,): too many unknown tokens, or too far from the reference rows."""
    flags = np.asarray(unk_share) > max_unk_share
    if reduced is not None:
        flags = flags | (ref.distance(reduced) > ref.meta["distance_threshold"])
    return flags


# --------------------------------------------------------------------------------------------------------------------
# The monitor
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class RequestFlag:
    """One request's out-of-distribution flag: ``flagged``, its ``reasons``, the share of unknown tokens and the
    distance to the reference rows (with the threshold)."""

    task: str
    flagged: bool
    reasons: list[str]
    unk_share: float
    distance: float | None
    threshold: float | None

    def in_words(self) -> str:
        if not self.flagged:
            return "Looks like the inputs this task was checked on."
        return "**Unusual input: this answer may be meaningless.** " + "; ".join(self.reasons) + "."


class Monitor:
    """Per-task windows of served requests compared with a :class:`Reference` (see the module docstring).

    ``window``: requests per task kept and tested (the latest ones); ``min_window``: fewer are not judged.
    """

    def __init__(
        self,
        reference: Reference,
        window: int = 200,
        alpha: float = 0.05,
        warn_alpha: float = 0.2,
        accuracy_drop: float = 0.05,
        permutations: int = 200,
        max_unk_share: float = 0.5,
        min_window: int = 30,
        seed: int = 0,
    ):
        if not isinstance(window, int) or isinstance(window, bool) or window < 2:
            raise ValueError(f"window must be an integer of at least 2 requests, got {window!r}")
        if not 0 < alpha < 1 or not alpha <= warn_alpha < 1:
            raise ValueError(f"need 0 < alpha <= warn_alpha < 1, got alpha={alpha!r}, warn_alpha={warn_alpha!r}")
        if not 0 < max_unk_share <= 1:
            raise ValueError(f"max_unk_share must be in (0, 1], got {max_unk_share!r}")
        self.reference, self.window, self.min_window = reference, window, min(min_window, window)
        self.options = dict(
            alpha=alpha,
            warn_alpha=warn_alpha,
            accuracy_drop=accuracy_drop,
            permutations=permutations,
            max_unk_share=max_unk_share,
            seed=seed,
        )
        self._rows = {name: collections.deque(maxlen=window) for name in reference.tasks}
        self.requests = collections.Counter()
        self.last_flags: list[RequestFlag] = []
        self._recent = collections.OrderedDict()  # (task, token ids) -> RequestFlag of the latest attached requests
        self._lock = threading.Lock()  # a server feeds and reads the windows from several threads

    @property
    def tasks(self) -> list[str]:
        return list(self.reference.tasks)

    def _ref(self, task: str) -> TaskReference:
        if task not in self.reference.tasks:
            raise ValueError(f"No monitoring reference for task {task!r}; the reference covers {self.tasks}")
        return self.reference.tasks[task]

    def observe(self, task: str, logits, pooled=None, unk_share=None, lengths=None, texts=None) -> list[RequestFlag]:
        """Add requests of ``task``: ``logits`` (m, K) (a task's columns; extra ``-inf`` columns are dropped),
        ``pooled`` (m, H) or None, ``unk_share`` (m,) and ``lengths`` (m,) (see :func:`token_descriptors`), ``texts``.
        Returns each request's :class:`RequestFlag`."""
        ref = self._ref(task)
        logits = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)[:, : _num_outputs(ref.spec)]
        m = len(logits)
        unk_share = np.zeros(m, np.float32) if unk_share is None else np.asarray(unk_share, np.float32)
        lengths = np.zeros(m, np.int32) if lengths is None else np.asarray(lengths, np.int32)
        pooled = None if pooled is None else np.asarray(pooled, np.float32)
        reduced = None if pooled is None else ref.reduce(pooled)
        distance = None if reduced is None else ref.distance(reduced)
        out = []
        for i in range(m):
            reasons = []
            if unk_share[i] > self.options["max_unk_share"]:
                reasons.append(f"{unk_share[i]:.0%} of its tokens are unknown to the model")
            if distance is not None and distance[i] > ref.meta["distance_threshold"]:
                reasons.append(
                    f"its representation is far from the reference rows (distance {distance[i]:.2f}, "
                    f"threshold {ref.meta['distance_threshold']:.2f})"
                )
            out.append(
                RequestFlag(
                    task,
                    bool(reasons),
                    reasons,
                    float(unk_share[i]),
                    None if distance is None else float(distance[i]),
                    ref.meta["distance_threshold"] if distance is not None else None,
                )
            )
        with self._lock:
            for i in range(m):
                self._rows[task].append(
                    (
                        logits[i],
                        None if pooled is None else pooled[i],
                        int(lengths[i]),
                        float(unk_share[i]),
                        None if texts is None else texts[i],
                    )
                )
            self.requests[task] += m
        self.last_flags = out
        return out

    def flag_for(self, task: str, input_ids: Sequence[int]) -> RequestFlag | None:
        """The flag of the latest request of ``task`` with these token ids seen through :meth:`attach` (None if none
        among the latest ones): how a server finds the flag of the answer it just gave, whatever ran in between."""
        with self._lock:
            return self._recent.get((task, tuple(int(i) for i in input_ids)))

    def window_features(self, task: str) -> Features:
        """The task's current window as :class:`Features`."""
        ref = self._ref(task)
        with self._lock:
            rows = list(self._rows[task])
        if not rows:
            k = _num_outputs(ref.spec)
            return Features(np.zeros((0, k), np.float32), None, np.zeros(0, np.int32), np.zeros(0, np.float32), [])
        pooled = None if any(r[1] is None for r in rows) else np.stack([r[1] for r in rows])
        texts = None if any(r[4] is None for r in rows) else [r[4] for r in rows]
        return Features(
            np.stack([r[0] for r in rows]),
            pooled,
            np.asarray([r[2] for r in rows]),
            np.asarray([r[3] for r in rows]),
            texts,
        )

    def status(self, task: str | None = None) -> dict[str, TaskStatus] | TaskStatus:
        """The status of ``task`` (or of every task with a reference: ``{task: TaskStatus}``)."""
        if task is None:
            return {name: self.status(name) for name in self.tasks}
        return compare(
            self._ref(task),
            self.window_features(task),
            min_window=self.min_window,
            requests=self.requests[task],
            **self.options,
        )

    def reset(self) -> None:
        """Forget every request seen (the windows, the counts and the flags)."""
        with self._lock:
            for rows in self._rows.values():
                rows.clear()
            self.requests.clear()
            self._recent.clear()

    # ----- feeding from the model itself -----
    def attach(self, pipe_or_model, tokenizer=None):
        """Feed the monitor from every forward pass of a CA-MTL model (or a pipeline's ``.model``): forward hooks read
        the task ids, token ids, pooled vectors and logits, so whatever runs the model (the pipeline, the app, a
        server) feeds it. Returns a handle whose ``remove()`` stops it. Rows of tasks without a reference are
        skipped."""
        model = getattr(pipe_or_model, "model", pipe_or_model)
        tokenizer = tokenizer or getattr(pipe_or_model, "tokenizer", None) or getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("attach needs the tokenizer (a pipeline carries one; else pass tokenizer=)")
        self.reference.check(model)
        names = [t["name"] for t in model.config.tasks]
        seen = {}

        def on_encoder(module, args, output):
            seen["pooled"] = output.pooler_output.detach().float().cpu().numpy()  # (B, H)

        def on_model(module, args, kwargs, output):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            task_ids = kwargs.get("task_ids")
            if input_ids is None or task_ids is None or not torch.is_tensor(task_ids):
                return
            input_ids = input_ids.cpu()
            mask = torch.ones_like(input_ids) if mask is None else mask.cpu()
            lengths, unk = token_descriptors(input_ids, mask, tokenizer)
            logits = output.logits.detach().float().cpu().numpy()
            pooled = seen.pop("pooled", None)
            texts = [tokenizer.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(input_ids, mask)]
            flags = {}  # row -> its flag, to give them back in the batch's order
            task_ids = task_ids.cpu().reshape(-1).tolist()
            for tid in sorted(set(task_ids)):
                if names[tid] not in self.reference.tasks:
                    continue
                rows = [i for i, t in enumerate(task_ids) if t == tid]
                got = self.observe(
                    names[tid],
                    logits[rows],
                    None if pooled is None else pooled[rows],
                    unk[rows],
                    lengths[rows],
                    [texts[i] for i in rows],
                )
                flags.update(zip(rows, got))
                with self._lock:
                    for i, f in zip(rows, got):
                        self._recent[(names[tid], tuple(input_ids[i][mask[i].bool()].tolist()))] = f
                    while len(self._recent) > RECENT_FLAGS:
                        self._recent.popitem(last=False)
            self.last_flags = [flags[i] for i in sorted(flags)]

        return _Handles(
            [_encoder(model).register_forward_hook(on_encoder), model.register_forward_hook(on_model, with_kwargs=True)]
        )


class _Handles:
    def __init__(self, handles):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def status_table(statuses: Mapping[str, TaskStatus]) -> list[list]:
    """Rows ``[task, status, requests, estimated accuracy, reasons]`` for a page or a log."""
    rows = []
    for name, s in statuses.items():
        acc = "" if s.estimated_accuracy is None else f"{s.estimated_accuracy:.1%}"
        mean = s.accuracy_estimates.get("average_confidence")
        if acc and s.reference_accuracy is not None:
            acc += (
                f" (ATC; mean confidence {mean:.1%}; " if "thresholded_confidence" in s.accuracy_estimates else " ("
            ) + f"reference {s.reference_accuracy:.1%})"
        rows.append([name, s.status, f"{s.window} of {s.requests}", acc, "; ".join(s.reasons)])
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------
def reference_rows(
    task_names: Sequence[str],
    data_dir: str,
    held_out_rows: int,
    train_rows: int,
    seed: int = 0,
    tasks: Sequence | None = None,
) -> tuple[dict, dict]:
    """``(held_out, train)`` rows per task from a data folder: the validation split (GLUE: dev.tsv) and a seeded
    sample of the train split."""
    from camtl.tasks import get_task, load_split

    held, train = {}, {}
    for i, name in enumerate(task_names):
        task = tasks[i] if tasks is not None else get_task(name)
        held[name] = load_split(task, "validation", data_dir, max_rows=held_out_rows, seed=seed)
        train[name] = load_split(task, "train", data_dir, max_rows=train_rows, seed=seed)
    return held, train


def write_reference_for_run(
    folder, tasks: Sequence, data_dir, held_out_rows: int, train_rows: int, seed: int, train_max_length: int, log=print
) -> Path | None:
    """What train.py does at the end of a run (``train.monitoring_reference``): the reference of the model saved in
    ``folder``, over a seeded sample of up to ``held_out_rows`` dev rows (held out) and ``train_rows`` train rows (PCA)
    of each task (`TaskDef`s), written into ``folder``. A task whose splits cannot be read is left out (it is then not
    monitored), with a log line."""
    from transformers import AutoTokenizer

    from modeling_camtl import CaMtlForMultiTask

    from .tasks import load_split

    started = time.perf_counter()
    model = CaMtlForMultiTask.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    held, train = {}, {}
    for task in tasks:
        if task.kind == "multi_label":
            log(f"Monitoring reference: task {task.name} left out ({MULTI_LABEL_NOT_MONITORED})")
            continue
        try:
            held[task.name] = load_split(task, "validation", data_dir, max_rows=int(held_out_rows), seed=seed)
            train[task.name] = load_split(task, "train", data_dir, max_rows=int(train_rows), seed=seed)
        except (ValueError, FileNotFoundError, OSError) as err:
            held.pop(task.name, None)
            log(f"Monitoring reference: task {task.name} left out ({err})")
            continue
        if len(held[task.name]) < MIN_REFERENCE_ROWS:
            log(
                f"Monitoring reference: task {task.name} left out (only {len(held.pop(task.name))} dev rows; a "
                f"reference needs {MIN_REFERENCE_ROWS})"
            )
    if not held:
        return None
    source = (
        f"held out: up to {held_out_rows} dev rows per task (seed {seed}); PCA: up to {train_rows} train rows per task"
    )
    path = build_reference(model, tokenizer, held, train, train_max_length=train_max_length, source=source).save(
        folder
    )[0]
    log(f"Monitoring reference for {sorted(held)} in {path} ({time.perf_counter() - started:.0f}s)")
    return path


def build_for_folder(
    folder,
    data_dir: str,
    held_out_rows: int = 1000,
    train_rows: int = 1000,
    out=None,
    train_max_length: int | None = 128,
    source: str | None = None,
) -> Path:
    """Build and save the reference of a checkpoint folder over its GLUE tasks' dev rows (held out) and train rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    names = [t["name"] for t in model.config.tasks]
    held, train = reference_rows(names, data_dir, held_out_rows, train_rows)
    reference = build_reference(
        model,
        tokenizer,
        held,
        train,
        train_max_length=train_max_length,
        source=source
        or f"held out: the validation split of {data_dir} (up to "
        f"{held_out_rows} rows per task); PCA: up to {train_rows} train rows",
    )
    return reference.save(out or folder)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camtl.monitoring", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="a reference for a checkpoint folder, written into it (or --out)")
    build.add_argument("folder")
    build.add_argument("--data-dir", default="../shared/data/glue", help="the tasks' data (GLUE TSV layout)")
    build.add_argument("--out", default=None)
    default = sub.add_parser("build-default", help="the shipped default model's, into default_model/ (or --out)")
    default.add_argument("--data-dir", default="../shared/data/glue")
    default.add_argument("--out", default=None)
    for p in (build, default):
        p.add_argument("--held-out-rows", type=int, default=1000, help="dev rows per task (a seeded sample)")
        p.add_argument("--train-rows", type=int, default=1000, help="train rows per task for the PCA basis")
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build_for_folder(args.folder, args.data_dir, args.held_out_rows, args.train_rows, args.out)
    else:
        from camtl.default_model import DEFAULT_MODEL_DIR, ensure_default_model

        path = build_for_folder(
            ensure_default_model(),
            args.data_dir,
            args.held_out_rows,
            args.train_rows,
            out=args.out or DEFAULT_MODEL_DIR,
            source=(
                "held out: GLUE dev rows (the shipped model's evaluation sets: it never trained "
                f"on them; up to {args.held_out_rows} per task, seeded sample); PCA: "
                f"{args.train_rows} GLUE train rows per task"
            ),
        )
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
