"""The multi-task optimisation toolbox of `camtl.trainer`: how the task losses are combined (``train.loss_weighting``)
and how the tasks' gradients are reconciled (``train.gradient_aggregation``).

Loss weighting. The training loss of a batch is ``sum_{t in P} w_t L_t / |P| + r``, ``L_t`` the mean loss of task
``t``'s rows, ``P`` the tasks present in the global batch, ``r`` a regulariser (uncertainty weighting's):

================  =====================================================================================================
``equal``         ``w_t = 1`` (the default): the model's own loss, untouched
``uncertainty``   Kendall et al. (CVPR 2018): ``w_t = exp(-s_t)``, ``r = sum_{t in P} s_t / |P|``, the log-variances
                  ``s_t`` trained with the model (AdamW, no weight decay, from 0: equal weights at the first step)
``dwa``           dynamic weight average (Liu et al., CVPR 2019): ``w_t = K softmax_t(r_t / tau)``, ``r_t`` the ratio of
                  task ``t``'s average loss over the last two periods (``train.dwa_period`` batches; 1 until known)
``random``        random loss weighting (Lin et al., TMLR 2022): ``w = |P| softmax_P(z)``, ``z ~ N(0, 1)`` drawn afresh
                  each batch from ``(seed, batch)``: the same weights on every process, and on resume
================  =====================================================================================================

A task absent from a batch is *masked*, not zero-filled: its term is left out, its log-variance gets no gradient at
all (``None``: AdamW's momentum does not move it either), its DWA average keeps its last value.

Gradient aggregation (TorchJD's aggregators, which take the matrix of per-task gradients): each batch's per-task
gradients ``g_t = d(w_t L_t)/d(theta_S)`` over a chosen parameter subset ``S`` (``train.aggregation_params``) are
stacked into ``J`` (|P|, n_S), averaged over the processes, and the aggregator's vector ``A(J)`` becomes the gradient
of ``S``; every other parameter takes the gradient of the weighted loss above. ``S`` is never the encoder's output: a
mixed batch's gradients there are disjoint across tasks (each row is one task's), so no aggregator sees a conflict.
The batch must hold several tasks: a ``mixed`` sampler (or MT-Uncertainty with the entropy allocation), split by task
here. ``none`` (the default) is the ordinary backward of the weighted loss. Each aggregator's vector is used as its
paper defines it (PCGrad and IMTL-G sum the tasks' projected gradients; UPGrad averages them; MGDA and CAGrad give a
convex-combination-like direction), so the step size differs from ``none``'s mean (AdamW mostly absorbs the scale;
clipping at ``max_grad_norm`` does not). Their step times are in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

_RANDOM_SALT = 0x2A4D
_AGGREGATOR_SALT = 0xA66


# ----- loss weighting -------------------------------------------------------------------------------------------------
class LossWeighting(nn.Module):
    """Task weights of each batch. ``trained`` (num_tasks,) bool: the tasks this run trains (the model may have more).

    Per batch: `weights` (present tasks -> (w, r)), then `observe` (the batch's global per-task mean losses). The
    module's state (parameters and buffers) is saved with resumable checkpoints.
    """

    name: ClassVar[str]
    #: whether the state must go into checkpoints
    stateful: ClassVar[bool] = True

    def __init__(self, trained: Sequence[bool], seed: int = 0, **_: Any):
        super().__init__()
        self.register_buffer("trained", torch.as_tensor(list(trained), dtype=torch.bool), persistent=False)
        self.seed = int(seed)
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))  # batches seen

    @property
    def num_tasks(self) -> int:
        return self.trained.numel()

    def weights(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, r)``: (num_tasks,) weights (only the present tasks' are used) and the scalar regulariser."""
        return torch.ones(self.num_tasks, device=present.device), torch.zeros((), device=present.device)

    def observe(self, task_losses: torch.Tensor) -> None:
        """After a batch: ``task_losses`` (num_tasks,) each task's mean loss over the global batch, nan if absent."""
        self.draws += 1

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())


class EqualWeighting(LossWeighting):
    """``w_t = 1``: the trainer uses the model's loss itself."""

    name = "equal"
    stateful = False


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. (2018): ``w_t = exp(-s_t)`` plus ``s_t`` in the loss, ``s_t = log sigma_t^2`` trained.

    One scalar parameter per task (not one vector): a task absent from a batch is left out of the graph, so its
    ``s_t`` has no gradient (``None``) and AdamW skips it, momentum and weight decay alike.
    """

    name = "uncertainty"

    def __init__(self, trained: Sequence[bool], seed: int = 0, **_: Any):
        super().__init__(trained, seed)
        self.log_vars = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(self.num_tasks)])

    def weights(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = present.nonzero().flatten()  # (|P|,)
        s = torch.stack([self.log_vars[i] for i in ids.tolist()])  # (|P|,) the present tasks' only
        w = torch.ones(self.num_tasks, device=s.device).index_put((ids,), torch.exp(-s))  # (num_tasks,)
        return w, s.sum() / len(ids)


class DynamicWeightAverage(LossWeighting):
    """Liu et al. (2019): ``w_t = K exp(r_t / tau) / sum_k exp(r_k / tau)`` over the ``K`` trained tasks, ``r_t =
    Lbar_t(p-1) / Lbar_t(p-2)`` the ratio of task ``t``'s average loss over the last two periods of ``period`` batches
    (the paper's epochs); ``r_t = 1`` until both are known. A task with no row in a period keeps its averages."""

    name = "dwa"

    def __init__(self, trained: Sequence[bool], seed: int = 0, temperature: float = 2.0, period: int = 1, **_: Any):
        super().__init__(trained, seed)
        if not temperature > 0 or not period >= 1:
            raise ValueError(f"dwa needs temperature > 0 and period >= 1, got {temperature!r} and {period!r}.")
        self.temperature, self.period = float(temperature), int(period)
        k = self.num_tasks
        self.register_buffer("period_sum", torch.zeros(k, dtype=torch.float64))  # this period's summed task losses
        self.register_buffer("period_n", torch.zeros(k, dtype=torch.long))  # batches that held the task
        self.register_buffer("averages", torch.full((2, k), float("nan"), dtype=torch.float64))  # (p-2, p-1)

    def weights(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ratio = torch.nan_to_num(self.averages[1] / self.averages[0], nan=1.0)  # (num_tasks,) 1 while unknown
        logits = torch.where(self.trained, ratio / self.temperature, torch.full_like(ratio, -torch.inf))
        w = int(self.trained.sum()) * torch.softmax(logits, 0)  # (num_tasks,) sums to K over the trained tasks
        return w.float().to(present.device), torch.zeros((), device=present.device)

    def observe(self, task_losses: torch.Tensor) -> None:
        seen = ~torch.isnan(task_losses)  # (num_tasks,)
        self.period_sum += torch.nan_to_num(task_losses.double().to(self.period_sum.device))
        self.period_n += seen.to(self.period_n.device)
        super().observe(task_losses)
        if int(self.draws) % self.period == 0:  # the period ends: shift in the averages of the tasks it saw
            had = self.period_n > 0
            average = self.period_sum / self.period_n.clamp(min=1)
            self.averages[0] = torch.where(had, self.averages[1], self.averages[0])
            self.averages[1] = torch.where(had, average, self.averages[1])
            self.period_sum.zero_()
            self.period_n.zero_()


class RandomWeighting(LossWeighting):
    """Lin et al. (2022): ``w = |P| softmax_P(z)`` over the present tasks, ``z ~ N(0, I)`` from a generator seeded by
    ``(seed, batch)``: every process draws the same weights, and a resumed run the same as an uninterrupted one."""

    name = "random"

    def weights(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = np.random.default_rng([self.seed, _RANDOM_SALT, int(self.draws)]).standard_normal(self.num_tasks)
        z = torch.as_tensor(z, device=present.device).masked_fill(~present, -torch.inf)  # (num_tasks,)
        return (int(present.sum()) * torch.softmax(z, 0)).float(), torch.zeros((), device=present.device)


LOSS_WEIGHTINGS: dict[str, type[LossWeighting]] = {
    cls.name: cls for cls in (EqualWeighting, UncertaintyWeighting, DynamicWeightAverage, RandomWeighting)
}


def make_loss_weighting(name: str, trained: Sequence[bool], seed: int = 0, **settings: Any) -> LossWeighting:
    """The weighting ``name`` (one of `LOSS_WEIGHTINGS`); ValueError naming the valid choices."""
    if name not in LOSS_WEIGHTINGS:
        raise ValueError(f"Unknown loss_weighting {name!r}; valid weightings: {list(LOSS_WEIGHTINGS)}.")
    return LOSS_WEIGHTINGS[name](trained, seed, **settings)


def weighted_batch_loss(
    per_example: torch.Tensor,
    task_ids: torch.Tensor,
    task_counts: torch.Tensor,
    world_size: int,
    weights: torch.Tensor,
    regulariser: torch.Tensor,
) -> torch.Tensor:
    """This process's share of ``sum_{t in P} w_t L_t / |P| + r`` over the global batch (DDP averages the shares).

    ``per_example`` (b,) losses of this process's rows; ``task_ids`` (b,); ``task_counts`` (num_tasks,) rows of each
    task in the *global* batch; ``weights`` (num_tasks,). Each row weighs ``w_t W / (n_t |P|)``: the mean over the
    ``W`` processes is the global batch's loss (as `camtl.trainer.global_batch_loss`, with weights). ``r`` is added on
    every process (the same value: its mean is itself).
    """
    counts = task_counts[task_ids].float()  # (b,)
    present = (task_counts > 0).sum().float()
    return (per_example * weights[task_ids] / counts).sum() * world_size / present + regulariser


def average_extra_gradients(weighting: LossWeighting, accelerator) -> None:
    """Under DDP: the weighting's own parameters (not in the DDP model) get the mean of the processes' gradients,
    which is the gradient of the global loss. Parameters without a gradient (absent tasks: the same on every process,
    since the present tasks are the global batch's) stay without."""
    with_grad = [p for p in weighting.extra_parameters() if p.grad is not None]
    if accelerator.num_processes == 1 or not with_grad:
        return
    flat = accelerator.reduce(torch.stack([p.grad.reshape(()) for p in with_grad]), "mean")  # (n,)
    for p, g in zip(with_grad, flat):
        p.grad.copy_(g)


# ----- gradient aggregation -------------------------------------------------------------------------------------------
#: TorchJD's aggregators by their ``train.gradient_aggregation`` name (CAGrad with the paper's c = 0.4).
AGGREGATORS = ("pcgrad", "cagrad", "upgrad", "mgda", "imtl_g")


def make_aggregator(name: str):
    """The TorchJD aggregator ``name`` (one of `AGGREGATORS`): a callable from the (m, n) matrix of per-task
    gradients to the (n,) update direction. ValueError naming the valid choices."""
    from torchjd import aggregation as jd

    makers = {
        "pcgrad": jd.PCGrad,
        "cagrad": lambda: jd.CAGrad(c=0.4),
        "upgrad": jd.UPGrad,
        "mgda": jd.MGDA,
        "imtl_g": jd.IMTLG,
    }
    if name not in makers:
        raise ValueError(f"Unknown gradient_aggregation {name!r}; valid: ['none', {', '.join(map(repr, makers))}].")
    return makers[name]()


def aggregation_parameters(model: nn.Module, which: str) -> list[str]:
    """Names of the trainable parameters whose per-task gradients are aggregated.

    ``shared``: every trainable parameter but the task heads (``heads.*``: each task's own) and the task-embedding
    table (``camtl_task.embedding``: row ``t`` is task ``t``'s alone), the parameters whose gradients may conflict.
    ``conditioning_and_top``: of those, CA-MTL's conditional modules (``camtl_*``), the last encoder layer and the
    pooler: fewer weight gradients per task (the backward still runs down to the lowest conditional module).
    """
    if which not in ("shared", "conditioning_and_top"):
        raise ValueError(f"Unknown aggregation_params {which!r}; valid: ['shared', 'conditioning_and_top'].")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    bare = [n.removeprefix("base_model.model.") for n in names]
    shared = [n for n, b in zip(names, bare) if not b.startswith("heads.") and "camtl_task.embedding" not in b]
    if which == "shared":
        return shared
    layers = [int(b.split("encoder.layer.")[1].split(".")[0]) for b in bare if "encoder.layer." in b]
    top = f"encoder.layer.{max(layers)}." if layers else None
    return [n for n in shared if "camtl_" in n or (top is not None and top in n) or ".pooler." in f".{n}"]


def aggregated_backward(
    model: nn.Module,
    per_example: torch.Tensor,
    task_ids: torch.Tensor,
    task_counts: torch.Tensor,
    weights: torch.Tensor,
    regulariser: torch.Tensor,
    accelerator,
    aggregator,
    aggregated: Sequence[str],
    extra: Sequence[nn.Parameter],
    seed: int,
    draw: int,
) -> torch.Tensor:
    """Gradients of one mixed batch with the per-task gradients of ``aggregated`` reconciled by ``aggregator``.

    The batch is split by task: ``l_t`` = this process's share of ``w_t L_t`` (each row ``w_t W / n_t``, ``n_t`` the
    task's rows in the global batch, so the processes' shares average to the global ``w_t L_t``). Then

    1. one backward per task present (through the retained graph): ``J[t] = d l_t / d theta_S``, and ``d l_t / d
       theta_R`` of every other trainable parameter (and of the weighting's own), which take the gradient of the
       weighted loss ``sum_t l_t / |P| + r`` (the mean of those, plus ``dr``: no extra backward through the model);
    2. under DDP, ``J`` and those gradients are averaged over the processes (the model was run under ``no_sync``);
    3. ``A(J)`` (aggregator's vector, computed under a torch generator seeded by ``(seed, draw)``, so a random
       aggregator such as PCGrad draws the same on every process) is added to the ``.grad`` of ``theta_S``.

    Gradients are divided by the accumulation steps, as ``accelerator.backward`` does. Returns the weighted loss.
    """
    world, scale = accelerator.num_processes, 1.0 / accelerator.gradient_accumulation_steps
    num_tasks = task_counts.numel()
    rows = per_example * weights[task_ids] * world / task_counts[task_ids].float()  # (b,)
    task_loss = rows.new_zeros(num_tasks).index_add(0, task_ids, rows)  # (num_tasks,) this process's shares
    present = (task_counts > 0).nonzero().flatten().tolist()
    loss = task_loss[present].sum() / len(present) + regulariser
    named = dict(model.named_parameters())
    chosen = [named[n] for n in aggregated]
    others = [p for n, p in named.items() if p.requires_grad and n not in set(aggregated)] + list(extra)
    rows_of_j, rest = [], [None] * len(others)
    for k, t in enumerate(present):
        grads = torch.autograd.grad(
            task_loss[t],
            chosen + others,
            retain_graph=k < len(present) - 1 or regulariser.requires_grad,
            allow_unused=True,
        )
        rows_of_j.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for p, g in zip(chosen, grads[: len(chosen)])
                ]
            )
        )
        rest = [
            r if g is None else g / len(present) if r is None else r + g / len(present)
            for r, g in zip(rest, grads[len(chosen) :])
        ]
    jacobian = torch.stack(rows_of_j)  # (|P|, n_S)
    if regulariser.requires_grad:  # uncertainty weighting's sum of log-variances: only the weighting's parameters
        reg = torch.autograd.grad(regulariser, others, allow_unused=True)
        rest = [r if g is None else g if r is None else r + g for r, g in zip(rest, reg)]
    # a parameter outside the graph (an absent task's log-variance) keeps no gradient at all: masked, not zeroed.
    # Which are outside is the same on every process (the present tasks are the global batch's).
    others, rest = [p for p, g in zip(others, rest) if g is not None], [g for g in rest if g is not None]
    flat_rest = torch.cat([g.reshape(-1) for g in rest]) if rest else jacobian.new_zeros(0)  # (n_R,)
    if world > 1:  # one all-reduce: the per-task gradients and the rest together
        both = accelerator.reduce(torch.cat([jacobian.reshape(-1), flat_rest]), "mean")
        jacobian, flat_rest = both[: jacobian.numel()].view_as(jacobian), both[jacobian.numel() :]
    generator_seed = int(np.random.default_rng([seed, _AGGREGATOR_SALT, draw]).integers(2**62))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        direction = aggregator(jacobian.float())  # (n_S,)
    _add_flat_grad(chosen, direction * scale)
    _add_flat_grad(others, flat_rest * scale)
    return loss.detach()


def _add_flat_grad(params: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        g = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        p.grad = g.clone() if p.grad is None else p.grad + g
