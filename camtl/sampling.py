"""Task sampling for multi-task training: which training rows make up each batch.

Every strategy draws the *global* batch (all processes together) from the same counter-based random
streams, so every process computes the same global batch and keeps its own rank-strided share
(``global_batch[rank::world_size]``). Hence:

* a run is a pure function of ``seed`` (no global RNG is touched), and two processes together see
  exactly the batches one process sees with the same global batch size;
* the state is a few counters plus the "seen" bitmaps (`state_dict`), so resuming is exact.

Each task reads its rows through a `TaskStream`: an endless sequence of seeded permutations of
``range(n)``, one per pass over the task ("epoch"), so rows are drawn without replacement within a
pass. Strategies:

=================  ==========================================================================
``proportional``   each batch is one task, drawn with probability ``n_t / sum(n)``
``uniform``        each batch is one task, drawn with probability ``1 / num_tasks``
``temperature``    each batch is one task, drawn with probability ``n_t^(1/T) / sum(n^(1/T))``
``sequential``     task after task: ``ceil(n_t / B)`` batches of task 0, then task 1, ... (cycles)
``uncertainty``    MT-Uncertainty (CA-MTL, Pilault et al. 2021): candidates scored by their normalised
                   prediction entropy, the most uncertain trained on; one class per ``allocation``:
  ``entropy``      `EntropyUncertaintySampler`, the paper's: a candidate batch of ``B`` (or
                   ``candidates_per_task``) rows from every task, the ``B`` most uncertain overall (a
                   mixed-task batch); by default every task keeps a floor of ``B // (2 * num_tasks)``
                   rows per batch (``min_rows_per_task=0`` is the paper's rule exactly), optionally after
                   ``warmup_steps`` balanced batches
  ``proportional`` `ProportionalUncertaintySampler`, ours (the default): each batch is one task drawn
                   as ``proportional`` draws it, its ``B`` most uncertain of ``candidates_per_task``
                   (default ``2B``) rows of that task
``mixed``          every batch holds every task: one row each, the rest drawn row by row with
                   probability ``n_t / sum(n)``: each task's expected share of the rows is about its
                   share of the data, as ``proportional`` gives it in whole batches. For the gradient
                   aggregators (``train.gradient_aggregation``), which need several tasks in one step
=================  ==========================================================================

Why the floor: with the paper's rule alone, a task whose predictions become *confidently wrong*
(an untrained head on top of features that other tasks shaped) scores low entropy and is never
selected again: the other tasks take its rows and it stays at majority-class accuracy.

Why ``allocation="proportional"``: across tasks, the entropy measures how hard a task is, not how much
training would help it: a task the model cannot learn stays the most uncertain and takes every row above the
floor, starving the others (`benchmarks/dev_entropy.py` replays the allocation with a trained model).
Proportional allocation keeps every task's share of the steps at its share of the data and uses the entropy for
what it can tell: which rows of a task the model is least sure of.

What each of these measured (the starved tasks, the replayed allocation, the dev scores of both allocations) is in
BENCHMARKS.md, beside the commands that produced it.

The fraction of the training data a strategy used (`data_fraction`) counts the distinct rows that
went into a training batch; for ``uncertainty`` the candidates scored but not selected do not count.
``data_fraction()["trained_rows"]`` counts every row trained on, repeats included (a task's passes are its
trained rows over its size).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

#: A training example: (task id, row index in that task's training set).
Example = tuple[int, int]
#: Scores every candidate of a global candidate list; higher means "train on it first".
Scorer = Callable[[list[Example]], Sequence[float]]

#: Where a regression task's uncertainty scores come from (``sampling.regression_scores``): ``borrow`` (a
#: classification task's, `score_sources`) or ``own`` (the binary entropy of the prediction's place in the range).
REGRESSION_SCORES = ("borrow", "own")

_STREAM_SALT = 0x5EED
_CHOICE_SALT = 0xC401CE


class TaskStream:
    """Endless rows of one task: pass ``e`` is the permutation ``default_rng([seed, salt, task, e])``.

    The state is ``(epoch, offset)``: where the next row comes from.
    """

    def __init__(self, size: int, seed: int, task_id: int):
        if size < 1:
            raise ValueError(f"Task {task_id} has no training rows; every task needs at least one.")
        self.size, self.seed, self.task_id = size, seed, task_id
        self.epoch, self.offset = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, _STREAM_SALT, self.task_id, self.epoch])
            self._perm, self._perm_epoch = rng.permutation(self.size), self.epoch
        return self._perm

    def take(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into the next pass when this one runs out)."""
        rows: list[int] = []
        while len(rows) < k:
            chunk = self._permutation()[self.offset : self.offset + k - len(rows)]
            rows.extend(int(i) for i in chunk)
            self.offset += len(chunk)
            if self.offset == self.size:
                self.epoch, self.offset = self.epoch + 1, 0
        return rows

    def state(self) -> list[int]:
        return [self.epoch, self.offset]

    def load_state(self, state: Sequence[int]) -> None:
        self.epoch, self.offset = int(state[0]), int(state[1])


class TaskSampler(ABC):
    """Common interface of the strategies.

    Args:
        task_sizes: training rows of each task, in task-id order.
        batch_size: the *global* batch size (all processes together); a multiple of ``world_size``.
        seed: the whole sequence of batches is a function of it.
        rank, world_size: this process and the number of processes; `next_batch` returns the
            rank-strided share ``global_batch[rank::world_size]``.
    """

    name: ClassVar[str]
    #: Whether `next_batch` needs a ``scorer``.
    needs_scorer: ClassVar[bool] = False

    def __init__(self, task_sizes: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not task_sizes:
            raise ValueError("A task sampler needs at least one task.")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"The global batch size ({batch_size}) must be a positive multiple of the number of "
                f"processes ({world_size})."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}.")
        self.task_sizes = [int(n) for n in task_sizes]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, int(seed), rank, world_size
        self.streams = [TaskStream(n, self.seed, t) for t, n in enumerate(self.task_sizes)]
        self.seen = [np.zeros(n, dtype=bool) for n in self.task_sizes]
        self.trained = np.zeros(len(self.task_sizes), dtype=np.int64)  # rows of each task trained on, repeats included
        self.draws = 0  # global batches drawn so far

    @property
    def num_tasks(self) -> int:
        return len(self.task_sizes)

    def epoch_batches(self, rule: str = "sum") -> int:
        """Global batches in one epoch: ``"sum"`` (ours, ``sum_t ceil(n_t / B)``, one pass over every task) or
        ``"tasks_x_largest"`` (the authors' MT-Uncertainty epoch: ``T * max_t ceil(n_t / B)``)."""
        batches = [math.ceil(n / self.batch_size) for n in self.task_sizes]
        if rule == "sum":
            return sum(batches)
        if rule == "tasks_x_largest":
            return len(batches) * max(batches)
        raise ValueError(f"Unknown epoch rule {rule!r}; valid rules: ['sum', 'tasks_x_largest'].")

    def next_batch(self, scorer: Scorer | None = None) -> list[Example]:
        """This process's share of the next global batch, as (task id, row) pairs."""
        if self.needs_scorer and scorer is None:
            raise ValueError(f"The {self.name!r} sampler needs a scorer (a function of the candidates).")
        batch = self._global_batch(scorer)
        for task, row in batch:
            self.seen[task][row] = True
        #: rows of each task in the global batch just drawn (for a loss that equals the one-process loss)
        self.last_task_counts = np.bincount([task for task, _ in batch], minlength=self.num_tasks)
        self.trained += self.last_task_counts
        self.draws += 1
        return batch[self.rank :: self.world_size]

    @abstractmethod
    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        """The next global batch (``batch_size`` examples), identical on every process."""

    def _rng(self) -> np.random.Generator:
        """A generator for the current draw only (counter-based: no state to save)."""
        return np.random.default_rng([self.seed, _CHOICE_SALT, self.draws])

    def data_fraction(self) -> dict[str, Any]:
        """Distinct training rows used so far: per task (in id order) and overall, as fractions of the rows; and the
        rows trained on, repeats included (``trained_rows``; ``passes`` = trained rows / rows)."""
        used = [int(s.sum()) for s in self.seen]
        return {
            "per_task": [u / n for u, n in zip(used, self.task_sizes)],
            "overall": sum(used) / sum(self.task_sizes),
            "used_rows": used,
            "total_rows": list(self.task_sizes),
            "trained_rows": [int(k) for k in self.trained],
            "passes": [int(k) / n for k, n in zip(self.trained, self.task_sizes)],
        }

    def state_dict(self) -> dict[str, Any]:
        """Counters and "seen" bitmaps (tensors, lists, ints: loadable with ``torch.load(weights_only=True)``)."""
        return {
            "strategy": self.name,
            "task_sizes": list(self.task_sizes),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "draws": self.draws,
            "streams": [s.state() for s in self.streams],
            "seen": [torch.from_numpy(s.copy()) for s in self.seen],
            "trained": [int(k) for k in self.trained],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`; ValueError when it was made by another strategy or for other data."""
        mine = {"strategy": self.name, "task_sizes": self.task_sizes, "batch_size": self.batch_size, "seed": self.seed}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(
                    f"Sampler state does not match this run: {key} is {state.get(key)!r} in the "
                    f"checkpoint and {value!r} here."
                )
        self.draws = int(state["draws"])
        for stream, s in zip(self.streams, state["streams"]):
            stream.load_state(s)
        self.seen = [torch.as_tensor(s).numpy().astype(bool).copy() for s in state["seen"]]
        # A checkpoint older than the trained-row counts: each distinct row used counts once (a lower bound).
        trained = state.get("trained", [int(s.sum()) for s in self.seen])
        self.trained = np.asarray(trained, dtype=np.int64)


class _OneTaskPerBatch(TaskSampler):
    """Each global batch holds ``batch_size`` rows of a single task drawn from `task_probabilities`."""

    def task_probabilities(self) -> np.ndarray:
        raise NotImplementedError

    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        probs = self.task_probabilities()  # (num_tasks,)
        task = int(self._rng().choice(self.num_tasks, p=probs))
        return [(task, row) for row in self.streams[task].take(self.batch_size)]


class ProportionalSampler(_OneTaskPerBatch):
    """Task ``t`` with probability ``n_t / sum(n)``: every row is equally likely to be trained on."""

    name = "proportional"

    def task_probabilities(self) -> np.ndarray:
        sizes = np.asarray(self.task_sizes, dtype=np.float64)
        return sizes / sizes.sum()


class UniformSampler(_OneTaskPerBatch):
    """Every task with probability ``1 / num_tasks``, whatever its size."""

    name = "uniform"

    def task_probabilities(self) -> np.ndarray:
        return np.full(self.num_tasks, 1.0 / self.num_tasks)


class TemperatureSampler(_OneTaskPerBatch):
    """Task ``t`` with probability ``n_t^(1/T) / sum(n^(1/T))``: T=1 is proportional, large T uniform."""

    name = "temperature"

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        temperature: float = 2.0,
    ):
        check_setting("temperature", temperature)
        super().__init__(task_sizes, batch_size, seed, rank, world_size)
        self.temperature = float(temperature)

    def task_probabilities(self) -> np.ndarray:
        logits = np.log(np.asarray(self.task_sizes, dtype=np.float64)) / self.temperature
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()


class SequentialSampler(TaskSampler):
    """Task after task: ``ceil(n_t / B)`` batches of task 0 (one pass), then of task 1, ..., then again."""

    name = "sequential"

    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        blocks = [math.ceil(n / self.batch_size) for n in self.task_sizes]
        position = self.draws % sum(blocks)
        task = int(np.searchsorted(np.cumsum(blocks), position, side="right"))
        return [(task, row) for row in self.streams[task].take(self.batch_size)]


class UncertaintySampler(TaskSampler):
    """What the two MT-Uncertainty allocations (`ALLOCATIONS`) share: a ``scorer`` (each candidate's normalised
    prediction entropy, in [0, 1]), the scores of regression tasks, and unscored warm-up batches.

    A regression prediction has no entropy of its own. With ``regression_scores="borrow"`` (the
    default, as the authors' code does for STS-B) candidate ``i`` of a regression task takes the score of
    candidate ``i`` of a classification task, chosen by `score_sources`: ``regression_score_source``
    (a task name) when given, else MRPC when present, else the ``k mod C``-th of the ``C``
    classification tasks for the ``k``-th regression task. ``"own"`` keeps the scorer's value (the
    model's binary entropy of the prediction's place in the label range, which peaks where an untrained
    head predicts and so favours regression tasks early on).

    During the first ``warmup_steps`` draws nothing is scored (an untrained head's entropy says little).
    ``candidates_per_task`` is how many rows of a task are drawn as candidates when that task is scored; each
    allocation has its own default.
    """

    name = "uncertainty"
    needs_scorer = True
    #: the `ALLOCATIONS` key of the class (``sampling.allocation``)
    allocation: ClassVar[str]

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        *,
        candidates_per_task: int,
        warmup_steps: int = 0,
        regression_tasks: Sequence[bool] | None = None,
        regression_scores: str = "borrow",
        task_names: Sequence[str] | None = None,
        regression_score_source: str | None = None,
    ):
        super().__init__(task_sizes, batch_size, seed, rank, world_size)
        check_setting("warmup_steps", warmup_steps)
        check_setting("candidates_per_task", candidates_per_task)
        #: candidates drawn from a task each time it is scored
        self.pool = candidates_per_task
        if regression_scores not in REGRESSION_SCORES:
            raise ValueError(f"regression_scores must be 'borrow' or 'own', got {regression_scores!r}.")
        regression = (
            np.zeros(self.num_tasks, dtype=bool)
            if regression_tasks is None
            else np.asarray(regression_tasks, dtype=bool)
        )
        if regression.shape != (self.num_tasks,):
            raise ValueError(f"regression_tasks needs one flag per task ({self.num_tasks}), got {len(regression)}.")
        if regression_scores == "own" and regression_score_source is not None:
            raise ValueError(
                "regression_score_source names the task a regression task borrows its scores from: it "
                "needs regression_scores='borrow'."
            )
        #: for every task, the task whose candidate scores it uses (itself unless it borrows)
        self.score_source = (
            np.arange(self.num_tasks)
            if regression_scores == "own"
            else score_sources(regression, task_names, regression_score_source)
        )
        self.warmup_steps = warmup_steps


class EntropyUncertaintySampler(UncertaintySampler):
    """MT-Uncertainty sampling as the paper allocates it (CA-MTL, Pilault et al., ICLR 2021, Algorithm 1): the
    entropy chooses across tasks, with a per-task floor.

    At every step a candidate batch of ``candidates_per_task`` rows (by default ``batch_size``, the paper's) is drawn
    from every task and scored. As in the paper, each score is weighted by how uncertain its task's candidate batch is
    relative to the most uncertain task: ``H'_i = H_i * mean_t(H) / max_t' mean_t'(H)``. The training batch is then:

    1. the floor: the ``min_rows_per_task`` most uncertain candidates of every task;
    2. the rest of the batch: the candidates with the highest ``H'`` among those left.

    ``min_rows_per_task=0`` is the paper's rule exactly; ``None`` (the default) is
    ``batch_size // (2 * num_tasks)``, so at most half of each batch is reserved. Warm-up batches are balanced
    over the tasks. The batch is ordered by ``H'``, most uncertain first; ties keep the candidate order.
    """

    allocation = "entropy"

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        *,
        candidates_per_task: int | None = None,
        min_rows_per_task: int | None = None,
        **scoring: Any,
    ):
        """``scoring``: `UncertaintySampler`'s ``warmup_steps``, ``regression_tasks``, ``regression_scores``,
        ``task_names``, ``regression_score_source``."""
        super().__init__(
            task_sizes,
            batch_size,
            seed,
            rank,
            world_size,
            candidates_per_task=batch_size if candidates_per_task is None else candidates_per_task,
            **scoring,
        )
        if self.pool * self.num_tasks < batch_size:
            raise ValueError(
                f"candidates_per_task must be an integer with candidates_per_task x num_tasks >= "
                f"batch_size (>= {math.ceil(batch_size / self.num_tasks)} here), or None for the "
                f"batch size ({batch_size}, the paper's), got {candidates_per_task!r}."
            )
        check_setting("min_rows_per_task", min_rows_per_task)
        if min_rows_per_task is None:
            min_rows_per_task = batch_size // (2 * self.num_tasks)
        # (min_rows_per_task <= batch_size / num_tasks <= candidates_per_task: every task has the rows of its floor)
        if min_rows_per_task * self.num_tasks > batch_size:
            raise ValueError(
                f"min_rows_per_task must be an integer in [0, batch_size // num_tasks = "
                f"{batch_size // self.num_tasks}] (or None for batch_size // (2 * num_tasks)), got "
                f"{min_rows_per_task!r}."
            )
        #: the floor: rows of every task in each batch
        self.min_rows_per_task = min_rows_per_task

    def candidates(self) -> list[Example]:
        """The next candidate batch of every task, task after task (advances the task streams)."""
        return [(t, row) for t, stream in enumerate(self.streams) for row in stream.take(self.pool)]

    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        if self.draws < self.warmup_steps:
            return self._balanced_batch()
        candidates = self.candidates()
        scores = _scores(scorer, candidates)  # (num_tasks * P,)
        scores = scores.reshape(self.num_tasks, self.pool)[self.score_source].reshape(-1)  # borrowed rows
        weighted = self.weighted(scores)  # (T * P,)
        order = np.argsort(-weighted, kind="stable")  # most uncertain first
        chosen = np.zeros(len(candidates), dtype=bool)
        if self.min_rows_per_task:
            # Within a task H' is H times a constant, so the task's best rows come first in `order`.
            task_of = order // self.pool  # (T * P,) task of each candidate, in `order`
            one_hot = task_of[:, None] == np.arange(self.num_tasks)  # (T * P, T)
            rank_in_task = one_hot.cumsum(axis=0)[np.arange(len(order)), task_of] - 1
            chosen[order[rank_in_task < self.min_rows_per_task]] = True
        rest = order[~chosen[order]][: self.batch_size - int(chosen.sum())]
        chosen[rest] = True
        return [candidates[i] for i in order if chosen[i]]

    def _balanced_batch(self) -> list[Example]:
        """``batch_size // T`` rows of every task; the remainder goes to tasks in turn (rotating each draw)."""
        counts = np.full(self.num_tasks, self.batch_size // self.num_tasks)
        extra = (np.arange(self.batch_size % self.num_tasks) + self.draws) % self.num_tasks
        counts[extra] += 1
        return [(t, row) for t in range(self.num_tasks) for row in self.streams[t].take(int(counts[t]))]

    def weighted(self, scores: np.ndarray) -> np.ndarray:
        """``H'_i = H_i * mean_t(H) / max_t' mean_t'(H)`` over the candidates (``pool`` per task, in task order)."""
        per_task = scores.reshape(self.num_tasks, self.pool)  # (T, P)
        means = per_task.mean(axis=1, keepdims=True)  # (T, 1)
        top = means.max()
        return (per_task * (means / top if top > 0 else 1.0)).reshape(-1)  # (T * P,)


class ProportionalUncertaintySampler(UncertaintySampler):
    """MT-Uncertainty with proportional allocation (ours, the default): the entropy chooses rows within a task only.

    Each batch is one task, drawn exactly as `ProportionalSampler` draws it (the same random stream: with
    ``candidates_per_task == batch_size`` the batches are the proportional sampler's), and its ``batch_size`` most
    uncertain of ``candidates_per_task`` candidates of that task (default ``2 x batch_size``), most uncertain first.
    Only that task's candidates are scored. A task that borrows its scores (``regression_scores="borrow"``) takes its
    next ``batch_size`` rows unscored: another task's entropies say nothing about which of its own rows are hard. So
    do warm-up batches. There is no floor: every task's share of the batches is its share of the rows.
    """

    allocation = "proportional"

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        *,
        candidates_per_task: int | None = None,
        **scoring: Any,
    ):
        """``scoring``: `UncertaintySampler`'s ``warmup_steps``, ``regression_tasks``, ``regression_scores``,
        ``task_names``, ``regression_score_source``."""
        super().__init__(
            task_sizes,
            batch_size,
            seed,
            rank,
            world_size,
            candidates_per_task=2 * batch_size if candidates_per_task is None else candidates_per_task,
            **scoring,
        )
        if self.pool < batch_size:
            raise ValueError(
                f"With allocation='proportional', candidates_per_task is the candidates of the "
                f"batch's task: an integer >= batch_size ({batch_size}), or None for "
                f"{2 * batch_size}, got {candidates_per_task!r}."
            )

    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        sizes = np.asarray(self.task_sizes, dtype=np.float64)
        task = int(self._rng().choice(self.num_tasks, p=sizes / sizes.sum()))  # as ProportionalSampler draws it
        stream = self.streams[task]
        if self.draws < self.warmup_steps or self.score_source[task] != task:
            return [(task, row) for row in stream.take(self.batch_size)]
        candidates = [(task, row) for row in stream.take(self.pool)]
        order = np.argsort(-_scores(scorer, candidates), kind="stable")[: self.batch_size]  # most uncertain first
        return [candidates[i] for i in order]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The rules of the settings that hold whatever the tasks and the batch size: (test, what is allowed). The samplers
#: check them (`check_setting`), and so does `camtl.config.validate_config` before anything is built; the rules that
#: depend on the batch (a floor that fits it, enough candidates to fill it) are their sampler's.
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
        "a positive number",
    ),
    "min_rows_per_task": (lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer or null"),
    "warmup_steps": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "candidates_per_task": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
}


def check_setting(name: str, value: Any, prefix: str = "") -> None:
    """ValueError naming ``prefix + name``, its value and what is allowed when ``value`` breaks `SETTING_RULES`."""
    ok, allowed = SETTING_RULES[name]
    if not ok(value):
        raise ValueError(f"Bad value {prefix}{name}={value!r}: {name} must be {allowed}.")


def _scores(scorer: Scorer, candidates: list[Example]) -> np.ndarray:
    """The scorer's value of every candidate, as a float64 vector; ValueError when it returned another count."""
    scores = np.asarray(scorer(candidates), dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(candidates):
        raise ValueError(f"The scorer returned {scores.shape[0]} scores for {len(candidates)} candidates.")
    return scores


#: MT-Uncertainty's two allocations (``sampling.allocation``), one class each: ``entropy`` (the paper's: the most
#: uncertain candidates of all tasks, with the floor) and ``proportional`` (one task per batch by its size; the entropy
#: picks rows within it).
ALLOCATIONS: dict[str, type[UncertaintySampler]] = {
    cls.allocation: cls for cls in (EntropyUncertaintySampler, ProportionalUncertaintySampler)
}

#: The task a regression task borrows its uncertainty scores from by default, when present: MRPC (paraphrase) is the
#: closest to STS-B (similarity). The authors' code copies SST-2's scores when STS-B and MRPC are both present.
DEFAULT_SCORE_SOURCE = "mrpc"


def score_sources(
    regression_tasks: Sequence[bool], task_names: Sequence[str] | None = None, source: str | None = None
) -> np.ndarray:
    """For every task, the task whose candidate scores it uses: itself for a classification task; for a regression
    task, ``source`` (the name of a classification task) when given, else MRPC when present, else the ``k mod C``-th
    of the ``C`` classification tasks for the ``k``-th regression task. Without classification tasks, itself.

    ValueError when ``source`` is not a classification task of ``task_names``, naming the valid choices."""
    regression = np.asarray(regression_tasks, dtype=bool)
    names = list(task_names) if task_names is not None else [str(t) for t in range(len(regression))]
    if len(names) != len(regression):
        raise ValueError(f"task_names needs one name per task ({len(regression)}), got {len(names)}.")
    classification = np.flatnonzero(~regression)
    sources = np.arange(len(regression))
    reg = np.flatnonzero(regression)
    choices = [names[t] for t in classification]
    if source is not None and source not in choices:
        raise ValueError(
            f"regression_score_source {source!r} is not a classification task of this run; valid "
            f"choices: {choices or 'none (no classification task)'}."
        )
    if not len(reg) or not len(classification):
        return sources
    if source is None and DEFAULT_SCORE_SOURCE in choices:
        source = DEFAULT_SCORE_SOURCE
    if source is not None:
        sources[reg] = names.index(source)
    else:
        sources[reg] = classification[np.arange(len(reg)) % len(classification)]
    return sources


# ----- mixed batches for the gradient aggregators (issue 27) ----------------------------------------------------------
class MixedSampler(TaskSampler):
    """Every global batch holds rows of every task: ``min_rows_per_task`` of each (1 through ``sampling.strategy
    mixed``, which has no setting of its own), then the remaining ``B - T x floor`` rows split over the tasks by one
    multinomial draw with ``p_t = n_t / sum(n)`` (the counter-based generator of the draw). Task ``t``'s expected rows
    per batch are ``floor + (B - T floor) n_t / sum(n)``: the floor over-samples small tasks by about ``floor x T / B``
    of the batch (one row in 32 per task with the defaults); ``epoch_batches`` counts the same batches as
    ``proportional``'s. The batch is ordered task after task."""

    name = "mixed"

    def __init__(
        self,
        task_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        min_rows_per_task: int = 1,
    ):
        super().__init__(task_sizes, batch_size, seed, rank, world_size)
        floor = min_rows_per_task
        if not (isinstance(floor, int) and floor >= 1 and floor * self.num_tasks <= batch_size):
            raise ValueError(
                f"The mixed strategy puts min_rows_per_task rows of every task in each batch: it must be "
                f"an integer in [1, batch_size // num_tasks = {batch_size // self.num_tasks}], got "
                f"{min_rows_per_task!r}; a global batch of {batch_size} rows holds at most "
                f"{batch_size} tasks."
            )
        self.min_rows_per_task = floor

    def _global_batch(self, scorer: Scorer | None) -> list[Example]:
        sizes = np.asarray(self.task_sizes, dtype=np.float64)
        rest = self.batch_size - self.min_rows_per_task * self.num_tasks
        counts = self.min_rows_per_task + self._rng().multinomial(rest, sizes / sizes.sum())  # (num_tasks,)
        return [(t, row) for t, stream in enumerate(self.streams) for row in stream.take(int(counts[t]))]


#: The strategies (``sampling.strategy``); ``uncertainty`` is one class per allocation (`ALLOCATIONS`).
SAMPLERS: dict[str, type[TaskSampler]] = {
    cls.name: cls
    for cls in (
        ProportionalSampler,
        UniformSampler,
        TemperatureSampler,
        SequentialSampler,
        UncertaintySampler,
        MixedSampler,
    )
}

#: The settings each strategy reads beyond the common arguments, with their defaults (those of the classes and of
#: ``SamplingArgs``). ``allocation`` chooses the uncertainty class; ``min_rows_per_task`` is the entropy allocation's.
STRATEGY_SETTINGS: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 2.0},
    "uncertainty": {
        "allocation": "proportional",
        "min_rows_per_task": None,
        "warmup_steps": 0,
        "regression_scores": "borrow",
        "regression_score_source": None,
        "candidates_per_task": None,
    },
}
#: Settings that describe the tasks rather than choose how to sample them: a strategy that does not read them ignores
#: them (the uncertainty samplers read them).
TASK_DESCRIPTIONS = ("regression_tasks", "task_names")


def make_sampler(
    strategy: str,
    task_sizes: Sequence[int],
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    **settings: Any,
) -> TaskSampler:
    """The sampler of ``strategy`` (one of `SAMPLERS`) with its ``settings`` (`STRATEGY_SETTINGS`, e.g.
    ``temperature`` for temperature; for uncertainty, ``allocation`` chooses the class of `ALLOCATIONS` and the
    others are its keyword arguments).

    A setting of another strategy is accepted at its default value (a configuration holds every strategy's settings)
    and refused otherwise, as is a name that no strategy knows: ValueError naming the valid choices.
    """
    if strategy not in SAMPLERS:
        raise ValueError(f"Unknown sampling strategy {strategy!r}; valid strategies: {list(SAMPLERS)}.")
    owner = {key: name for name, keys in STRATEGY_SETTINGS.items() for key in keys}  # setting -> its strategy
    unknown = sorted(set(settings) - set(owner) - set(TASK_DESCRIPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown sampler setting(s) {unknown}; valid settings: {sorted([*owner, *TASK_DESCRIPTIONS])}."
        )
    for key, value in settings.items():
        if key in owner and owner[key] != strategy and value != STRATEGY_SETTINGS[owner[key]][key]:
            raise ValueError(
                f"{key}={value!r} is a setting of the {owner[key]} strategy, which the {strategy} "
                "strategy does not read; leave it at its default or choose that strategy."
            )
    mine = {k: v for k, v in settings.items() if owner.get(k) == strategy}
    common = dict(seed=seed, rank=rank, world_size=world_size)
    if strategy != "uncertainty":
        return SAMPLERS[strategy](task_sizes, batch_size, **common, **mine)
    mine.update((k, settings[k]) for k in TASK_DESCRIPTIONS if k in settings)
    allocation = mine.pop("allocation", STRATEGY_SETTINGS["uncertainty"]["allocation"])
    if allocation not in ALLOCATIONS:
        raise ValueError(f"Unknown allocation {allocation!r}; valid allocations: {list(ALLOCATIONS)}.")
    if allocation == "proportional" and mine.pop("min_rows_per_task", None) is not None:
        raise ValueError(
            f"min_rows_per_task (here {settings['min_rows_per_task']!r}) is the floor of the entropy "
            "allocation; allocation='proportional' draws one task per batch and has no floor: leave it "
            "None."
        )
    return ALLOCATIONS[allocation](task_sizes, batch_size, **common, **mine)


__all__ = [
    "ALLOCATIONS",
    "DEFAULT_SCORE_SOURCE",
    "REGRESSION_SCORES",
    "SAMPLERS",
    "SETTING_RULES",
    "STRATEGY_SETTINGS",
    "EntropyUncertaintySampler",
    "Example",
    "MixedSampler",
    "ProportionalSampler",
    "ProportionalUncertaintySampler",
    "Scorer",
    "SequentialSampler",
    "TaskSampler",
    "TaskStream",
    "TemperatureSampler",
    "check_setting",
    "UncertaintySampler",
    "UniformSampler",
    "make_sampler",
    "score_sources",
]
