"""The training loop of ``train.py``: one function, `train`, runs a `RunConfig` from start (or a checkpoint) to the
final model and its ``results.json``.

Where things are:

* `setup` builds a `RunSetup` (configuration, accelerator, model and data: `camtl.build`); `prepare` turns it into a
  `Run` (adding the sampler, batches, scorer, optimiser and schedule); both are frozen once built;
* `train` / `_train`: the loop, its state a `LoopState` (a checkpoint's ``trainer_state.json``); `_train_step`,
  `_forward_backward`: one optimizer step;
* `MultiTaskBatches`: the sampler's examples as padded batches; `global_batch_loss`: the loss of a global batch;
* `predict`: the one inference loop (no grad, length-sorted, rank-shared and gathered) behind `evaluate` (dev metrics)
  and `EntropyScorer` (MT-Uncertainty's scores);
* `_evaluate_and_keep_best` and `_finish`: best-model keeping and the final model folder;
* checkpoints and the output folder: `camtl.checkpointing`; the configuration: `camtl.config`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from modeling_camtl import is_camtl_parameter

from .build import (
    RunSetupError,
    build_model,
    get_dataloaders,
    log,
    order_for_init,
    own_progress_bars_only,
    resolve_tasks,
)
from .checkpointing import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    RESULTS_FILE,
    check_output_dir,
    clear_previous_run,
    drop_stale_best,
    load_checkpoint,
    publish_model,
    remove_unfinished_saves,
    resolve_checkpoint,
    save_checkpoint,
    save_model,
)
from .config import RunConfig, config_to_dict, dump_config, flat_hparams, resolve_config, validate_config
from .interrupt import StopRequest, stopped_at_once_line, stopped_line
from .metrics import MULTI_LABEL_THRESHOLD, compute_task_metrics, glue_average, majority_class_reference
from .model_card import write_model_card
from .monitoring import write_reference_for_run
from .optimisation import (
    LossWeighting,
    aggregated_backward,
    aggregation_parameters,
    average_extra_gradients,
    make_aggregator,
    make_loss_weighting,
    weighted_batch_loss,
)
from .sampling import EntropyUncertaintySampler, Example, TaskSampler, make_sampler
from .tasks import TaskDef


# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RunSetup:
    """What `setup` builds from the configuration, before the output folder is written: everything that can fail on
    bad input. ``train_sets[i]`` is None for a task that is evaluated but not trained."""

    cfg: RunConfig
    tasks: list[TaskDef]
    accelerator: Accelerator
    model: Any
    parameter_counts: dict[str, int]
    train_sets: list
    eval_sets: list
    collator: Any
    resume_path: Path | None
    leakage: dict  # the leakage filter's counts (camtl.leakage)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def names(self) -> list[str]:
        return [task.name for task in self.tasks]

    @property
    def trained_ids(self) -> list[int]:
        return [i for i, ds in enumerate(self.train_sets) if ds is not None]

    @property
    def trained_names(self) -> list[str]:
        return [self.tasks[i].name for i in self.trained_ids]


@dataclass(frozen=True, eq=False)
class Run(RunSetup):
    """What the loop works with, built by `prepare` from a `RunSetup`: its parts (``model`` now wrapped by the
    accelerator) and the sampler, batches, scorer (None unless the sampler needs one), optimiser and schedule."""

    sampler: TaskSampler
    batches: MultiTaskBatches
    scorer: EntropyScorer | None
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    total_steps: int
    # the optimisation toolbox (camtl.optimisation): train.loss_weighting; train.gradient_aggregation's TorchJD
    # aggregator (None for none) and the names of the parameters whose per-task gradients it reconciles
    weighting: LossWeighting | None = None
    aggregator: Any = None
    aggregated: list[str] | None = None


@dataclass
class LossWindow:
    """The training losses summed since the last log line: the batches' (``loss``, ``n`` batches) and each task's
    (``task_sum``, ``task_n`` batches that had the task), in task-id order."""

    loss: float = 0.0
    n: int = 0
    task_sum: list[float] = field(default_factory=list)
    task_n: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, num_tasks: int) -> LossWindow:
        return cls(task_sum=[0.0] * num_tasks, task_n=[0] * num_tasks)

    def add(self, accelerator: Accelerator, loss: torch.Tensor, task_losses: torch.Tensor) -> torch.Tensor:
        """Add one batch's loss (the mean of the processes' losses: the global batch's loss) and its per-task
        losses (averaged over the processes that had the task); returns those per-task losses ((num_tasks,), nan
        where no process had the task; the same on every process)."""
        task_losses = task_losses.detach().float()  # (num_tasks,), nan where absent
        present = ~torch.isnan(task_losses)
        stats = torch.cat([loss.detach().float().reshape(1), torch.nan_to_num(task_losses), present.float()])
        if accelerator.num_processes > 1:
            stats = accelerator.reduce(stats, "sum")
        stats = stats.tolist()
        n_tasks = len(self.task_sum)
        self.loss += stats[0] / accelerator.num_processes
        self.n += 1
        for i in range(n_tasks):
            self.task_sum[i] += stats[1 + i]
            self.task_n[i] += round(stats[1 + n_tasks + i])
        sums, had = torch.tensor(stats[1 : 1 + n_tasks]), torch.tensor(stats[1 + n_tasks :])
        return torch.where(had > 0, sums / had.clamp(min=1), torch.full_like(sums, float("nan")))


@dataclass
class LoopState:
    """The training loop's state, saved in every checkpoint as ``trainer_state.json`` (`to_dict`, `from_dict`).

    ``best`` and the entries of ``eval_history`` are evaluations ``{"step", "metrics", "data_fraction"}``; those of
    ``loss_history`` are log lines ``{"step", "loss", "lr", "tasks"}``. ``world_size``, ``global_batch_size`` and
    ``total_steps`` record the run that wrote the state (a resume on another number of processes is not exact).
    """

    step: int
    best: dict[str, Any] | None
    eval_history: list[dict[str, Any]]
    loss_history: list[dict[str, Any]]
    wall_time_s: float
    world_size: int
    global_batch_size: int
    total_steps: int
    window: LossWindow

    @classmethod
    def fresh(cls, run: Run) -> LoopState:
        return cls(
            step=0,
            best=None,
            eval_history=[],
            loss_history=[],
            wall_time_s=0.0,
            world_size=run.accelerator.num_processes,
            global_batch_size=run.sampler.batch_size,
            total_steps=run.total_steps,
            window=LossWindow.empty(len(run.tasks)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, the layout of ``trainer_state.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoopState:
        """The state of a ``trainer_state.json``; ValueError naming the keys it lacks or does not know. (A field added
        later needs a default, the value older runs had: their checkpoints lack it.)"""
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing, unknown = sorted(set(required) - set(state)), sorted(set(state) - set(names))
        if missing or unknown:
            raise ValueError(
                f"Not a camtl trainer state: missing keys {missing}, unknown keys {unknown}; expected {names}."
            )
        return cls(**{**state, "window": LossWindow(**state["window"])})

    def close_window(self, lr: float, names: Sequence[str]) -> dict[str, Any]:
        """The log line of the window at this step (appended to ``loss_history``); a new window starts."""
        w = self.window
        entry = {
            "step": self.step,
            "loss": w.loss / max(w.n, 1),
            "lr": lr,
            "tasks": {name: w.task_sum[i] / w.task_n[i] for i, name in enumerate(names) if w.task_n[i]},
        }
        self.loss_history.append(entry)
        self.window = LossWindow.empty(len(names))
        return entry


def setup(cfg: RunConfig) -> RunSetup:
    """Everything that can fail on bad input, before any training: configuration, output folder, model, data.

    Raises `RunSetupError` naming the problem (unknown task, missing data, bad label, bad value, output
    folder holding another run, ...).
    """
    try:
        cfg = resolve_config(cfg)
        validate_config(cfg)
        tasks = resolve_tasks(cfg)
        if cfg.model.init_from:
            tasks = order_for_init(cfg, tasks)
        elif cfg.model.trainable == "new_tasks":
            raise ValueError("model.trainable=new_tasks needs model.init_from (a trained CA-MTL model to extend)")
        resume_path = resolve_checkpoint(cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise RunSetupError(str(e)) from e
    t = cfg.train
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # one process: a run before this one in the same Python process (a test, a notebook, a benchmark) may have
        # used another mixed precision, which Accelerate would refuse to change
        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        mixed_precision=t.mixed_precision,
        log_with=None if t.report_to == "none" else t.report_to,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=cfg.logging_dir),
    )
    try:
        check_output_dir(cfg)
        accelerator.wait_for_everyone()  # every process has checked before anyone writes
        set_seed(t.seed)  # the same initialisation of the new parameters on every process
        model, counts = build_model(cfg, tasks)
        train_sets, eval_sets, collator, leakage = get_dataloaders(cfg, tasks, model.tokenizer, accelerator)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise RunSetupError(str(e)) from e
    return RunSetup(cfg, tasks, accelerator, model, counts, train_sets, eval_sets, collator, resume_path, leakage)


def optimizer_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, new_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters in AdamW groups: with weight decay, and without (biases, LayerNorm weights, task
    embeddings); with ``new_lr_scale != 1`` each is split again into the pretrained parameters (rate ``lr``) and the
    new ones, CA-MTL's modules and the task heads (rate ``lr * new_lr_scale``). Empty groups are left out."""
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None}
    groups: dict[tuple[bool, bool], list] = {(d, n): [] for d in (True, False) for n in (False, True)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # no decay on biases, LayerNorm weights and task embeddings (decoupled decay would also move the frozen
        # rows of the task-embedding table when only new tasks train)
        no = name.endswith("bias") or id(param) in no_decay or "camtl_task.embedding" in name
        new = new_lr_scale != 1.0 and is_camtl_parameter(name.removeprefix("base_model.model."))
        groups[(not no, new)].append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * (new_lr_scale if new else 1)}
        for (decay, new), params in groups.items()
        if params
    ]


def build_optimizer(model, t, total_steps: int, extra_parameters: Sequence[torch.nn.Parameter] = ()):
    """AdamW (no weight decay on biases and LayerNorm weights), linear warm-up then linear decay to 0.
    ``extra_parameters`` (a loss weighting's own, e.g. uncertainty weighting's log-variances): one more group, at the
    peak rate, without weight decay."""
    groups = optimizer_groups(model, t.weight_decay, t.learning_rate, t.new_parameters_lr_scale)
    if extra_parameters:
        groups.append({"params": list(extra_parameters), "weight_decay": 0.0, "lr": t.learning_rate})
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def unused_parameters(run: RunSetup) -> list[str]:
    """Names of the trainable parameters that a forward and backward over one row of every trained task leave without
    a gradient: none for CA-MTL (every module and head runs on every row), but e.g. the task encoder of a model with
    every conditioning switched off, or the pooler with mean pooling. Eval mode: no random numbers drawn."""
    model = run.model
    was_training = model.training
    model.eval()
    features = [rows_to_features(run.train_sets[i], [0])[0] for i in run.trained_ids]
    device = next(model.parameters()).device  # before accelerator.prepare: where the model was built
    batch = {k: v.to(device) for k, v in run.collator(features).items()}
    model(**batch).loss.backward()
    names = [name for name, param in model.named_parameters() if param.requires_grad and param.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return names


def prepare(setup: RunSetup, on_output_dir: Callable[[], None] | None = None) -> Run:
    """The `Run` of ``setup``: build the sampler (RunSetupError on bad settings); write the resolved configuration;
    build the batches, scorer, optimiser and schedule. ``on_output_dir`` is called once every process knows the output
    folder holds this run, before the first collective of DDP's wrapping (so every process has called it before any
    starts training)."""
    cfg, t, acc = setup.cfg, setup.cfg.train, setup.accelerator
    world = acc.num_processes  # the sampler first: its errors must leave the output folder untouched
    trained = setup.trained_ids
    try:
        sampler = make_sampler(
            cfg.sampling.strategy,
            [len(setup.train_sets[i]) for i in trained],
            t.batch_size * world,
            seed=t.seed,
            rank=acc.process_index,
            world_size=world,
            temperature=cfg.sampling.temperature,
            min_rows_per_task=cfg.sampling.min_rows_per_task,
            warmup_steps=cfg.sampling.warmup_steps,
            regression_tasks=[setup.tasks[i].kind == "regression" for i in trained],
            regression_scores=cfg.sampling.regression_scores,
            task_names=[setup.tasks[i].name for i in trained],
            regression_score_source=cfg.sampling.regression_score_source,
            candidates_per_task=cfg.sampling.candidates_per_task,
            allocation=cfg.sampling.allocation,
        )
    except ValueError as e:
        raise RunSetupError(f"Bad sampling settings: {e}") from e
    if acc.is_main_process:
        setup.out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite_output_dir and setup.resume_path is None:
            clear_previous_run(setup.out)
        remove_unfinished_saves(setup.out)
        (setup.out / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
    acc.wait_for_everyone()
    if on_output_dir is not None:
        on_output_dir()
    steps_per_epoch = math.ceil(sampler.epoch_batches(t.epoch_length) / t.gradient_accumulation_steps)
    total_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * steps_per_epoch))
    weighting = make_loss_weighting(
        t.loss_weighting,
        [ds is not None for ds in setup.train_sets],
        seed=t.seed,
        temperature=t.dwa_temperature,
        period=t.dwa_period or steps_per_epoch * t.gradient_accumulation_steps,
    ).to(acc.device)
    optimizer, scheduler = build_optimizer(setup.model, t, total_steps, weighting.extra_parameters())
    aggregator = aggregated = None
    if t.gradient_aggregation != "none":
        aggregator = make_aggregator(t.gradient_aggregation)
        aggregated = aggregation_parameters(setup.model, t.aggregation_params)
        if not aggregated:
            raise RunSetupError(
                f"train.aggregation_params {t.aggregation_params!r} selects no trainable parameter "
                f"of this model (model.trainable {cfg.model.trainable!r}): choose 'shared'."
            )
    if world > 1:
        unused = unused_parameters(setup)
        # DDP must then look for them at every step (a pass over the graph); otherwise it would wait for their
        # gradients forever
        acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=bool(unused))
        if unused:
            log(f"{len(unused)} trainable tensors get no gradient (e.g. {unused[0]}): DDP finds unused parameters")
    model, optimizer = acc.prepare(setup.model, optimizer)
    # Not prepared (a prepared scheduler steps once per process per update); saved with the checkpoints.
    acc.register_for_checkpointing(scheduler)
    if weighting.stateful:  # after the scheduler: checkpoints of equal-weighted runs keep their layout
        acc.register_for_checkpointing(weighting)
    batches = MultiTaskBatches(
        sampler,
        [setup.train_sets[i] for i in trained],
        setup.collator,
        acc.device,
        task_ids=trained,
        num_tasks=len(setup.tasks),
    )
    scorer = (
        EntropyScorer(acc, model, batches, t.eval_batch_size, cfg.sampling.score_mode) if sampler.needs_scorer else None
    )
    parts = {f.name: getattr(setup, f.name) for f in fields(RunSetup)}
    return Run(
        **{**parts, "model": model},
        sampler=sampler,
        batches=batches,
        scorer=scorer,
        optimizer=optimizer,
        scheduler=scheduler,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        weighting=weighting,
        aggregator=aggregator,
        aggregated=aggregated,
    )


def train(cfg: RunConfig, command_line: str | None = None) -> dict[str, Any]:
    """Train, evaluate, checkpoint and write the model folder; returns the results (also in results.json).

    A run stopped by ``train.max_steps_this_run`` returns ``{"interrupted": True, "step": ...}`` and
    writes no final model. So does a run stopped by SIGINT or SIGTERM (`camtl.interrupt`), after finishing its
    step and writing a checkpoint (``"signal"`` names it); a second Ctrl-C raises ``KeyboardInterrupt`` at once,
    its message saying how to resume.
    """
    command_line = command_line or " ".join(shlex.quote(a) for a in sys.argv)
    with StopRequest() as stop, own_progress_bars_only():
        try:
            return _train(cfg, command_line, stop)
        except KeyboardInterrupt as interrupted:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            raise KeyboardInterrupt(
                stopped_at_once_line(cfg.output_dir, command_line, world, stop.caught)
            ) from interrupted


def _train(cfg: RunConfig, command_line: str, stop: StopRequest) -> dict[str, Any]:
    """`train` with ``stop`` catching SIGINT/SIGTERM from the moment the output folder holds the run."""
    start_time = time.time()
    # from the moment the folder holds this run, SIGINT/SIGTERM finish a step, write a checkpoint and stop
    run = prepare(setup(cfg), on_output_dir=stop.catch)
    t, acc = run.cfg.train, run.accelerator
    state, exact = _start_state(run)
    if state is None:  # resumed a finished run
        acc.end_training()
        return json.loads((run.out / RESULTS_FILE).read_text(encoding="utf-8"))
    if t.report_to != "none":
        acc.init_trackers("camtl", config=flat_hparams(run.cfg))
    counts = run.parameter_counts
    train_rows = [len(ds) if ds is not None else 0 for ds in run.train_sets]
    log(
        f"{len(run.tasks)} tasks {run.names}, train rows {train_rows}, dev rows "
        f"{[len(ds) for ds in run.eval_sets]}; {run.cfg.sampling.strategy} sampling; global batch "
        f"{run.sampler.batch_size} x {t.gradient_accumulation_steps} accumulation on {acc.num_processes} "
        f"process(es); {run.total_steps} steps"
        + (" (max_steps; epochs ignored)" if t.max_steps else "")
        + f"; trainable parameters {counts['trainable']:,} of {counts['total']:,}"
    )

    step = state.step
    stop_at = run.total_steps if t.max_steps_this_run is None else min(run.total_steps, step + t.max_steps_this_run)
    progress = tqdm(total=run.total_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    run.model.train()
    while step < stop_at:
        _train_step(run, state)
        step = state.step = step + 1
        progress.update(1)
        if step % t.log_every == 0 or step == run.total_steps:
            entry = state.close_window(run.scheduler.get_last_lr()[0], run.names)
            progress.set_postfix(loss=f"{entry['loss']:.4f}")
            acc.log(
                {
                    "train/loss": entry["loss"],
                    "train/lr": entry["lr"],
                    **{f"train/loss_{k}": v for k, v in entry["tasks"].items()},
                },
                step=step,
            )
        if (t.eval_every and step % t.eval_every == 0) or step == run.total_steps:
            _evaluate_and_keep_best(run, state, step)
        if t.save_every and (step % t.save_every == 0 or step == run.total_steps):
            state.wall_time_s += time.time() - start_time
            start_time = time.time()
            save_checkpoint(acc, run.out, step, state.to_dict(), run.sampler, t.save_total_limit)
        if stop.agreed(acc):
            break
    stop.release()
    progress.close()
    state.wall_time_s += time.time() - start_time
    if stop.signal_name and step < run.total_steps:
        return _stop_on_signal(run, state, stop.signal_name, command_line)
    if step < run.total_steps:
        log(
            f"Stopped after step {step} of {run.total_steps} (max_steps_this_run); resume with "
            "--resume_from_checkpoint latest"
        )
        acc.end_training()
        return {
            "interrupted": True,
            "step": step,
            "total_steps": run.total_steps,
            "data_fraction": _fraction(run.sampler, run.trained_names),
        }
    results = _finish(run, state, exact if run.resume_path is not None else None, command_line)
    acc.end_training()
    return results


def _stop_on_signal(run: Run, state: LoopState, signal_name: str, command_line: str) -> dict[str, Any]:
    """After SIGINT/SIGTERM: a checkpoint of the step reached (unless one was just saved), then one line."""
    acc, t, step = run.accelerator, run.cfg.train, state.step
    checkpoint = run.out / CHECKPOINTS_DIR / f"checkpoint-{step}"
    if not (t.save_every and step % t.save_every == 0):
        checkpoint = save_checkpoint(acc, run.out, step, state.to_dict(), run.sampler, t.save_total_limit)
    acc.end_training()
    log(stopped_line(signal_name, step, run.total_steps, checkpoint, command_line, acc.num_processes), logging.WARNING)
    return {
        "interrupted": True,
        "signal": signal_name,
        "step": step,
        "total_steps": run.total_steps,
        "checkpoint": str(checkpoint),
        "data_fraction": _fraction(run.sampler, run.trained_names),
    }


def _start_state(run: Run) -> tuple[LoopState | None, bool]:
    """A fresh loop state, or the checkpoint's (model, optimizer, sampler, RNG restored); None when the
    checkpoint already finished the run."""
    if run.resume_path is None:
        set_seed(run.cfg.train.seed, device_specific=True)  # each process its own dropout masks
        return LoopState.fresh(run), True
    saved, exact = load_checkpoint(run.accelerator, run.resume_path, run.sampler)
    drop_stale_best(run.out, saved)
    state = LoopState.from_dict(saved)
    if state.step >= run.total_steps and (run.out / RESULTS_FILE).is_file():
        log(f"{run.out} already finished its {run.total_steps} steps: nothing to resume")
        return None, exact
    log(
        f"Resumed from {run.resume_path} at step {state.step}"
        + ("" if exact else " (another number of processes: other dropout masks)")
    )
    return state, exact


def _train_step(run: Run, state: LoopState) -> None:
    """One optimizer step: ``gradient_accumulation_steps`` batches, clipping, AdamW, schedule."""
    acc, t = run.accelerator, run.cfg.train
    for _ in range(t.gradient_accumulation_steps):
        with acc.accumulate(run.model):
            batch = run.batches.next(run.scorer)
            loss, task_losses = _forward_backward(run, batch)
            average_extra_gradients(run.weighting, acc)
            if acc.sync_gradients and t.max_grad_norm > 0:
                acc.clip_grad_norm_(run.model.parameters(), t.max_grad_norm)
            run.optimizer.step()
            if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                run.scheduler.step()
            run.optimizer.zero_grad()
        run.weighting.observe(state.window.add(acc, loss, task_losses))


def _forward_backward(run: Run, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradients of one batch; returns (loss, per-task mean losses) for logging."""
    acc, world = run.accelerator, run.accelerator.num_processes
    weighting = getattr(run, "weighting", None)  # (a stand-in run of a test may have neither)
    weighting = weighting if weighting is not None and weighting.name != "equal" else None
    if weighting is not None:  # train.loss_weighting: the tasks present in the global batch, their weights
        weights, regulariser = weighting.weights(run.batches.task_counts > 0)  # (num_tasks,), ()
    if getattr(run, "aggregator", None) is not None:  # train.gradient_aggregation: camtl.optimisation
        if weighting is None:
            weights, regulariser = torch.ones(len(run.tasks), device=acc.device), torch.zeros((), device=acc.device)
        with acc.no_sync(run.model) if world > 1 else contextlib.nullcontext():  # it averages the gradients itself
            output = run.model(**batch)
            per_example = _example_losses(run, output, batch)  # (b,)
            loss = aggregated_backward(
                acc.unwrap_model(run.model),
                per_example,
                batch["task_ids"],
                run.batches.task_counts,
                weights,
                regulariser,
                acc,
                run.aggregator,
                run.aggregated,
                run.weighting.extra_parameters() if weighting is not None else [],
                seed=run.cfg.train.seed,
                draw=run.sampler.draws,
            )
        return loss, output.task_losses
    output = run.model(**batch)
    if weighting is not None:
        loss = weighted_batch_loss(
            _example_losses(run, output, batch), batch["task_ids"], run.batches.task_counts, world, weights, regulariser
        )
    else:
        loss = (
            output.loss
            if world == 1
            else global_batch_loss(
                _example_losses(run, output, batch), batch["task_ids"], run.batches.task_counts, world
            )
        )
    acc.backward(loss)
    return loss, output.task_losses


def _finish(run: Run, state: LoopState, exact: bool | None, command_line: str | None) -> dict[str, Any]:
    """Put the final model (best or last) in the output folder and write results.json."""
    acc, t, out = run.accelerator, run.cfg.train, run.out
    final = state.best if t.final_model == "best" and state.best is not None else state.eval_history[-1]
    if acc.is_main_process and t.final_model == "best" and (out / BEST_DIR).is_dir():
        publish_model(out / BEST_DIR, out)
    acc.wait_for_everyone()
    if t.final_model == "last" or not (out / "config.json").is_file():
        save_model(acc, run.model, out / ".last")
        if acc.is_main_process:
            publish_model(out / ".last", out)
    acc.wait_for_everyone()
    fraction = _fraction(run.sampler, run.trained_names)
    steps = state.step
    results = {
        "tasks": final["metrics"]["tasks"],
        "average": final["metrics"]["average"],
        "final_model": t.final_model,
        "final_model_step": final["step"],
        "last": state.eval_history[-1],
        "eval_history": state.eval_history,
        "steps": steps,
        "steps_per_epoch": run.steps_per_epoch,
        "epochs": steps / run.steps_per_epoch,
        "examples_trained": steps * run.sampler.batch_size * t.gradient_accumulation_steps,
        "wall_time_s": round(state.wall_time_s, 2),
        "data_fraction": fraction,
        "parameters": run.parameter_counts,
        "eval_rows": {task.name: len(ds) for task, ds in zip(run.tasks, run.eval_sets)},
        "leakage": run.leakage,
        "majority_class": majority_class_reference(  # the floor: a task not trained here takes its dev labels
            run.tasks,
            [(tr if tr is not None else ev)["labels"] for tr, ev in zip(run.train_sets, run.eval_sets)],
            [ev["labels"] for ev in run.eval_sets],
        ),
        "sampling": sampling_summary(run),
        "world_size": acc.num_processes,
        "global_batch_size": run.sampler.batch_size,
        "mixed_precision": t.mixed_precision,
        "resumed_exactly": exact,
        "train_loss": state.loss_history[-1]["loss"] if state.loss_history else None,
        "loss_history": state.loss_history,
        "command_line": command_line or " ".join(shlex.quote(a) for a in sys.argv),
    }
    if acc.is_main_process:
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_model_card(out, results, training_config=config_to_dict(run.cfg))  # the checkpoint's README.md
        if t.monitoring_reference:
            d = run.cfg.data  # a run that caps its rows caps the reference's too (min with monitoring_rows)
            write_reference_for_run(
                out,
                run.tasks,
                d.data_dir,
                min(t.monitoring_rows, d.max_eval_rows or math.inf),
                min(t.monitoring_rows, d.max_train_rows or math.inf),
                t.seed,
                d.max_length,
                log,
            )
    log(
        f"Dev average {results['average']:.4f} (step {final['step']}); "
        + ", ".join(f"{k}={v['main']:.4f}" for k, v in results["tasks"].items())
    )
    log(
        f"Data used: {fraction['overall']:.1%} of the training rows ("
        + ", ".join(f"{k} {v:.1%}" for k, v in fraction["per_task"].items())
        + "); passes trained ("
        + ", ".join(f"{k} {v:.2f}" for k, v in fraction["passes"].items())
        + f"); wall time {results['wall_time_s']:.0f}s; model in {out}"
    )
    return results


# ----- small helpers of the loop --------------------------------------------------------------------------------------
def sampling_summary(run: Run) -> dict[str, Any]:
    """The sampling settings in effect (the uncertainty floor resolved to its number of rows)."""
    s = run.cfg.sampling
    summary: dict[str, Any] = {"strategy": s.strategy}
    if s.strategy == "temperature":
        summary["temperature"] = s.temperature
    if s.strategy == "mixed":
        summary["min_rows_per_task"] = run.sampler.min_rows_per_task
    if s.strategy == "uncertainty":
        names = [run.tasks[i].name for i in run.trained_ids]
        # the floor of the entropy allocation; proportional allocation has none (one task a batch)
        floor = run.sampler.min_rows_per_task if isinstance(run.sampler, EntropyUncertaintySampler) else None
        summary.update(
            min_rows_per_task=floor,
            warmup_steps=run.sampler.warmup_steps,
            regression_scores=s.regression_scores,
            score_mode=s.score_mode,
            score_sources={names[t]: names[src] for t, src in enumerate(run.sampler.score_source) if src != t},
            candidates_per_task=run.sampler.pool,
            allocation=run.sampler.allocation,
        )
    return summary


def _fraction(sampler, names: Sequence[str]) -> dict[str, Any]:
    f = sampler.data_fraction()
    return {
        "overall": f["overall"],
        **{key: dict(zip(names, f[key])) for key in ("per_task", "used_rows", "total_rows", "trained_rows", "passes")},
    }


def _evaluate_and_keep_best(run: Run, state: LoopState, step: int) -> None:
    """Evaluate every task; save the model to best/ when the average beats the best so far."""
    cfg, accelerator = run.cfg, run.accelerator
    metrics = evaluate(run.model, run.eval_sets, run.tasks, run.collator, accelerator, cfg.train.eval_batch_size)
    entry = {"step": step, "metrics": metrics, "data_fraction": run.sampler.data_fraction()["overall"]}
    state.eval_history.append(entry)
    accelerator.log(
        {"eval/average": metrics["average"], **{f"eval/{k}": v["main"] for k, v in metrics["tasks"].items()}}, step=step
    )
    log(
        f"step {step}: dev average {metrics['average']:.4f} ("
        + ", ".join(f"{k} {v['main']:.4f}" for k, v in metrics["tasks"].items())
        + f"); data used {entry['data_fraction']:.1%}"
    )
    best = state.best
    if cfg.train.final_model == "best" and (best is None or metrics["average"] > best["metrics"]["average"]):
        state.best = entry
        save_model(accelerator, run.model, run.out / BEST_DIR, extra={"step": step, **metrics})


# ----- batches, loss, inference -----------------------------------------------------------------------------------
def rows_to_features(ds, rows: Sequence[int]) -> list[dict[str, Any]]:
    """Rows of a tokenized dataset as a list of dicts (the collator's input)."""
    cols = ds[list(rows)]  # dict of lists
    keys = list(cols)
    return [dict(zip(keys, values)) for values in zip(*(cols[k] for k in keys))]


class MultiTaskBatches:
    """Training batches of this process: a `TaskSampler` over per-task tokenized datasets, padded by ``collator``.

    ``next(scorer)`` returns a dict of tensors (``input_ids``, ``attention_mask``, ``token_type_ids``,
    ``task_ids``, ``labels``) on ``device``, in the order the sampler gave the examples.
    """

    def __init__(
        self,
        sampler: TaskSampler,
        datasets: Sequence,
        collator,
        device: torch.device | str = "cpu",
        task_ids: Sequence[int] | None = None,
        num_tasks: int | None = None,
    ):
        self.sampler, self.datasets, self.collator, self.device = sampler, list(datasets), collator, device
        # the model's id of each sampled task (the sampler may draw from a subset of the model's tasks)
        self.task_ids = torch.as_tensor(list(task_ids) if task_ids is not None else range(len(self.datasets)))
        self.num_tasks = num_tasks if num_tasks is not None else len(self.datasets)

    def features(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        by_task: dict[int, list[int]] = {}
        for position, (task, _) in enumerate(examples):
            by_task.setdefault(task, []).append(position)
        out: list[dict[str, Any]] = [{}] * len(examples)
        for task, positions in by_task.items():
            for position, feature in zip(
                positions, rows_to_features(self.datasets[task], [examples[p][1] for p in positions])
            ):
                out[position] = feature
        return out

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        batch = self.collator(self.features(examples))
        return {k: v.to(self.device) for k, v in batch.items()}

    def next(self, scorer=None) -> dict[str, torch.Tensor]:
        batch = self.collate(self.sampler.next_batch(scorer))
        counts = torch.as_tensor(self.sampler.last_task_counts)  # (sampled tasks,) global
        self.task_counts = (
            torch.zeros(self.num_tasks, dtype=counts.dtype).index_add_(0, self.task_ids, counts).to(self.device)
        )  # (num_tasks,) global rows of each model task
        return batch


def _example_losses(run: Run, output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (b,) per-row losses of a batch's output: the model's own (``example_losses``: every task kind, (b,) or
    (b, K) labels)."""
    return run.accelerator.unwrap_model(run.model).example_losses(output.logits, batch["labels"], batch["task_ids"])


def global_batch_loss(
    per_example: torch.Tensor, task_ids: torch.Tensor, task_counts: torch.Tensor, world_size: int
) -> torch.Tensor:
    """This process's part of the loss of the whole global batch, scaled for DDP's gradient averaging.

    The model's loss is the mean over the tasks present of each task's mean loss. On one process's share
    of a mixed-task batch that is not the global batch's loss, so under DDP each process weighs its rows
    by the *global* task counts: ``loss_r = W / T_present * sum_{i in r} l_i / n_task(i)``. The mean of
    ``loss_r`` over the ``W`` processes (what DDP's gradient averaging differentiates) is exactly the
    one-process loss of the global batch.

    Args:
        per_example: (b,) each row's loss (``model.example_losses``).
        task_ids: (b,) task of each row.
        task_counts: (num_tasks,) rows of each task in the global batch.
    """
    counts = task_counts[task_ids].float()  # (b,) global rows of each row's task
    present = (task_counts > 0).sum().float()
    return (per_example / counts).sum() * world_size / present


def predict(
    model,
    features: Sequence[dict[str, Any]],
    collator,
    accelerator: Accelerator,
    batch_size: int,
    read: Callable[[Any], torch.Tensor],
    train_mode: bool = False,
) -> list:
    """``read(output)`` (a tensor, one entry per row: (b,) or (b, ...)) of every row of ``features``, in their order, as
    plain Python values: the one inference loop.

    Each process computes its rank-strided share of the rows in length-sorted chunks of ``batch_size`` (less padding),
    under ``torch.inference_mode()`` and the run's autocast, with the unwrapped model (no DDP collective) in eval mode
    (``train_mode``: dropout on); the shares are gathered, so every process returns the same full list. It draws
    random numbers only in train mode (dropout).
    """
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.train(train_mode)
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = sorted(range(rank, len(features), world), key=lambda i: len(features[i]["input_ids"]))  # stable
    local = []
    with torch.inference_mode(), accelerator.autocast():
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            batch = collator([features[i] for i in chunk])
            batch = {k: v.to(accelerator.device) for k, v in batch.items() if k != "labels"}
            local.extend(zip(chunk, read(net(**batch)).float().tolist()))  # one value (or list) per row
    net.train(was_training)
    pairs = gather_object(local) if world > 1 else local
    return [value for _, value in sorted(pairs)]


class EntropyScorer:
    """MT-Uncertainty scores: each candidate's normalised prediction entropy (``model(...).entropy``), computed by
    `predict` in eval mode (``mode="train"``: train mode, dropout on, as the authors' code does)."""

    def __init__(self, accelerator, model, batches: MultiTaskBatches, batch_size: int, mode: str = "eval"):
        self.accelerator, self.model, self.batches, self.batch_size = accelerator, model, batches, batch_size
        self.mode = mode

    def __call__(self, candidates: Sequence[Example]) -> np.ndarray:
        scores = predict(
            self.model,
            self.batches.features(candidates),
            self.batches.collator,
            self.accelerator,
            self.batch_size,
            lambda output: output.entropy,
            train_mode=self.mode == "train",
        )
        return np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------------
def prediction_reader(task: TaskDef) -> Callable[[Any], torch.Tensor]:
    """What `evaluate` reads of an output for ``task``'s metrics: the regression score (b,), the class id (b,), or a
    multi-label task's 0/1 per label (b, L): its sigmoid reaches ``MULTI_LABEL_THRESHOLD`` (the pipeline's default)."""
    if task.kind == "regression":
        return lambda output: output.logits[:, 0]
    if task.kind == "multi_label":
        width = len(task.labels)
        return lambda output: (output.logits[:, :width].float().sigmoid() >= MULTI_LABEL_THRESHOLD).float()
    return lambda output: output.logits.argmax(-1)


def evaluate(
    model, eval_sets: Sequence, tasks: Sequence[TaskDef], collator, accelerator: Accelerator, batch_size: int = 64
) -> dict[str, Any]:
    """GLUE metrics of every task's dev set: ``{"tasks": {name: {..., "main"}}, "average": mean of "main"}``.

    Predictions come from `predict` (eval mode, every process the same result); evaluation draws no random numbers,
    so it does not change the training's random stream.
    """
    results = {}
    for task, ds in zip(tasks, eval_sets):
        features = rows_to_features(ds, range(len(ds)))
        preds = predict(model, features, collator, accelerator, batch_size, prediction_reader(task))
        labels = [f["labels"] if task.kind == "multi_label" else float(f["labels"]) for f in features]
        results[task.name] = compute_task_metrics(task, preds, labels)
    return {"tasks": results, "average": glue_average(results)}
