"""Train one CA-MTL model (Pilault, El hattami and Pal, ICLR 2021) on several tasks from a BERT checkpoint.

Quick start (bundled all-MiniLM-L6-v2, the GLUE sample in data/sample/glue, a few minutes on 2 CPU cores):

    python train.py                                   # = python train.py --config configs/quickstart.yaml

The paper's recipe on the full GLUE data, with overrides on the command line:

    python train.py --config configs/glue.yaml --data.data_dir ../shared/data/glue --train.learning_rate 3e-5

Two processes (CPU, gloo) or GPUs, same global batch as one process with batch_size 8:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no --main_process_port 29511 train.py --train.batch_size 4

Resume an interrupted run exactly: ``python train.py <same arguments> --resume_from_checkpoint latest``.
Every option: ``python train.py --help``; the output folder's layout: ``camtl/training.py``.
The script is a few importable functions (``parse_config``, ``build_model``, ``get_dataloaders``, ``train``,
``evaluate``, ``main``) so tests run it end to end on small local data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from jsonargparse import ActionConfigFile, ArgumentParser
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from camtl.data import (
    MultiTaskCollator,
    TaskDef,
    get_task,
    load_split,
    resolve_labels,
    tokenize_split,
)
from camtl.interrupt import StopRequest, stopped_at_once_line, stopped_line
from camtl.metrics import compute_task_metrics, glue_average, majority_class_reference
from camtl.model_card import write_model_card
from camtl.sampling import TaskSampler, make_sampler
from camtl.training import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    RESULTS_FILE,
    EntropyScorer,
    MultiTaskBatches,
    RunConfig,
    config_to_dict,
    check_output_dir,
    clear_previous_run,
    dump_config,
    flat_hparams,
    global_batch_loss,
    length_pieces,
    load_checkpoint,
    optimizer_groups,
    publish_model,
    remove_unfinished_saves,
    resolve_checkpoint,
    resolve_config,
    rows_to_features,
    save_checkpoint,
    save_model,
    validate_config,
)
from camtl.weights import naming_damaged_weights
from modeling_camtl import CaMtlForMultiTask, is_camtl_parameter

logger = logging.getLogger("camtl.train")


def log(message: str, level: int = logging.INFO) -> None:
    """Log on the main process only (``RANK`` is set by ``accelerate launch`` and ``torchrun``)."""
    if os.environ.get("RANK", "0") == "0":
        logger.log(level, message)


class RunSetupError(ValueError):
    """Bad input found before training starts (the message names the problem and the valid choices)."""


# --------------------------------------------------------------------------------------------------------------------
def parse_config(args: Sequence[str] | None = None, *, exit_on_error: bool = True) -> RunConfig:
    """Parse ``--config file.yaml`` plus command-line overrides (``--train.learning_rate 3e-5``) into a `RunConfig`."""
    parser = ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0], exit_on_error=exit_on_error,
                            default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML configuration (configs/*.yaml).")
    parser.add_class_arguments(RunConfig, None, fail_untyped=True)
    ns = parser.parse_args(list(args) if args is not None else None)
    ns = parser.instantiate(ns)
    fields = {k: getattr(ns, k) for k in RunConfig.__dataclass_fields__}
    return RunConfig(**fields)


def resolve_tasks(cfg: RunConfig) -> list[TaskDef]:
    """The `TaskDef` of every configured task, label names filled in; ValueError for unknown or duplicate tasks.

    A file task's relative paths are looked up in ``data.data_dir`` first, then in the working directory."""
    tasks = []
    search_dirs = [d for d in (cfg.data.data_dir, os.getcwd()) if d is not None]  # for a file task's relative paths
    for i, entry in enumerate(cfg.data.tasks):
        task = get_task(entry) if isinstance(entry, str) else TaskDef.from_dict(entry, search_dirs)
        task = resolve_labels(task)
        source = getattr(task, "source", None)
        if getattr(source, "validation_file", "") is None:
            raise ValueError(f"data.tasks[{i}] ({task.name}) declares no validation_file: every task needs dev data "
                             "for evaluation and model selection.")
        tasks.append(task)
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"data.tasks names {duplicates} more than once; each task may appear once.")
    return tasks


def build_model(cfg: RunConfig, tasks: Sequence[TaskDef]) -> tuple[CaMtlForMultiTask, dict[str, int]]:
    """CA-MTL on ``cfg.model.base_model`` with one head per task, frozen per ``cfg.model.trainable``.

    Regression heads start at the middle of their ``label_range`` (a smaller first loss, and an untrained
    regression head counts as maximally uncertain for MT-Uncertainty, as an untrained classifier does; at 0,
    the bottom of STS-B's range, its rows would score ~0 entropy and never be sampled).
    Returns the model (with ``model.tokenizer``) and its parameter counts ``{"trainable", "frozen", "total"}``.
    """
    if cfg.model.init_from:
        return continue_model(cfg, tasks)
    with naming_damaged_weights(cfg.model.base_model):  # from_bert warns itself about missing BERT parameters
        model, info = CaMtlForMultiTask.from_bert(cfg.model.base_model, tasks=[t.to_spec() for t in tasks],
                                                  output_loading_info=True, **dict(cfg.model.camtl))
    new = [k for k in info.get("missing_keys", []) if is_camtl_parameter(k)]
    log(f"Loaded {cfg.model.base_model}: {len(new)} new CA-MTL/head tensors initialised")
    if getattr(model, "tokenizer", None) is None:
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(cfg.model.base_model)
    with torch.no_grad():  # an untrained regression head predicts the middle of its range: maximal uncertainty
        for spec in model.config.tasks:
            if spec["kind"] == "regression":
                model.heads[spec["name"]].bias.fill_(sum(spec["label_range"]) / 2)
    if cfg.data.max_length > model.config.max_position_embeddings:
        raise ValueError(f"Bad value data.max_length={cfg.data.max_length}: the base model has "
                         f"{model.config.max_position_embeddings} positions.")
    counts = model.set_trainable(cfg.model.trainable)
    counts["total"] = counts["trainable"] + counts["frozen"]
    return model, counts


def order_for_init(cfg: RunConfig, tasks: Sequence[TaskDef]) -> list[TaskDef]:
    """With ``model.init_from``: the run's tasks in the trained model's id order, then the new tasks.

    ValueError when a task of the model is missing from ``data.tasks`` or declared differently."""
    from modeling_camtl import CaMtlConfig

    old = CaMtlConfig.from_pretrained(cfg.model.init_from).tasks
    by_name = {t.name: t for t in tasks}
    missing = [spec["name"] for spec in old if spec["name"] not in by_name]
    if missing:
        raise ValueError(f"data.tasks must list every task of model.init_from ({[s['name'] for s in old]}): "
                         f"{missing} missing. Their dev sets are evaluated to show they did not change.")
    for spec in old:
        mine = by_name[spec["name"]].to_spec()
        if (mine["kind"], mine["labels"]) != (spec["kind"], spec["labels"]):
            raise ValueError(f"Task {spec['name']!r} is declared as {mine['kind']} {mine['labels']} in data.tasks "
                             f"but the model in init_from has it as {spec['kind']} {spec['labels']}.")
    old_names = [spec["name"] for spec in old]
    return [by_name[n] for n in old_names] + [t for t in tasks if t.name not in old_names]


def continue_model(cfg: RunConfig, tasks: Sequence[TaskDef]) -> tuple[CaMtlForMultiTask, dict[str, int]]:
    """Load a trained CA-MTL model (``model.init_from``), add the new tasks of ``tasks`` and freeze per
    ``model.trainable`` (``new_tasks``: only the added tasks' embedding rows and heads train)."""
    from transformers import AutoTokenizer

    with naming_damaged_weights(cfg.model.init_from):
        model = CaMtlForMultiTask.from_pretrained(cfg.model.init_from)
    model.tokenizer = AutoTokenizer.from_pretrained(cfg.model.init_from)
    new = [t for t in tasks if t.name not in model.config.task_names]
    for task in new:
        model.add_task(task.to_spec(), init_from="mean")
        if task.kind == "regression":
            with torch.no_grad():
                model.heads[task.name].bias.fill_(sum(task.label_range or (0.0, 1.0)) / 2)
    log(f"Continuing from {cfg.model.init_from}: tasks {model.config.task_names}, new {[t.name for t in new]}")
    if cfg.model.trainable == "new_tasks":
        if not new:
            raise ValueError("model.trainable=new_tasks needs at least one task in data.tasks that the model in "
                             f"model.init_from does not have (it has {model.config.task_names})")
        counts = model.set_trainable("tasks", tasks=[t.name for t in new])
    else:
        counts = model.set_trainable(cfg.model.trainable)
    counts["total"] = counts["trainable"] + counts["frozen"]
    return model, counts


def trained_task_ids(cfg: RunConfig, tasks: Sequence[TaskDef]) -> list[int]:
    """The tasks this run trains on (all, or with ``new_tasks`` only those that model.init_from lacks)."""
    if cfg.model.trainable != "new_tasks":
        return list(range(len(tasks)))
    from modeling_camtl import CaMtlConfig

    old = set(CaMtlConfig.from_pretrained(cfg.model.init_from).task_names)
    return [i for i, t in enumerate(tasks) if t.name not in old]


def get_dataloaders(cfg: RunConfig, tasks: Sequence[TaskDef], tokenizer, accelerator: Accelerator):
    """Load, check and tokenize every task's train and dev split (cached ``datasets.map``).

    Returns ``(train_sets, eval_sets, collator)``: per-task tokenized datasets in task-id order and the
    padding collator. Batches are built by the task sampler (`camtl.sampling`) in `train`, each process
    its own rank-strided share; they do not go through ``accelerator.prepare``.
    """
    d = cfg.data
    trained = set(trained_task_ids(cfg, tasks))
    train_sets: list = [None] * len(tasks)  # None: not trained in this run (model.trainable=new_tasks)
    eval_sets: list = [None] * len(tasks)
    splits = [(task_id, split) for task_id in range(len(tasks)) for split in ("train", "validation")
              if split == "validation" or task_id in trained]
    # one progress line for all the data (train() turns datasets' bars for every split off)
    progress = tqdm(total=len(splits), desc="data", unit="split", disable=not accelerator.is_local_main_process)
    with accelerator.main_process_first():
        for task_id, split in splits:
            progress.set_postfix_str(f"{tasks[task_id].name} {split}")
            rows = d.max_train_rows if split == "train" else d.max_eval_rows
            ds = load_split(tasks[task_id], split, data_dir=d.data_dir, max_rows=rows,
                            seed=cfg.train.seed if rows is not None else None)
            (train_sets if split == "train" else eval_sets)[task_id] = tokenize_split(ds, tokenizer, d.max_length,
                                                                                      task_id)
            progress.update()
    progress.close()
    return train_sets, eval_sets, MultiTaskCollator(tokenizer)


@contextmanager
def own_progress_bars_only():
    """Inside the block, datasets' and transformers' progress bars (read, check and tokenize each split, load and save
    each model) are off: a run shows its own "data" and "train" lines. They are as they were after the block."""
    libraries = [(datasets.is_progress_bar_enabled(), datasets.enable_progress_bars, datasets.disable_progress_bars),
                 (hf_logging.is_progress_bar_enabled(), hf_logging.enable_progress_bar, hf_logging.disable_progress_bar)]
    for _, _, disable in libraries:
        disable()
    try:
        yield
    finally:
        for was, enable, disable in libraries:
            (enable if was else disable)()


# --------------------------------------------------------------------------------------------------------------------
def evaluate(model, eval_sets: Sequence, tasks: Sequence[TaskDef], collator, accelerator: Accelerator,
             batch_size: int = 64) -> dict[str, Any]:
    """GLUE metrics of every task's dev set: ``{"tasks": {name: {..., "main"}}, "average": mean of "main"}``.

    Each process predicts its rank-strided share of the rows (length-sorted batches, the unwrapped model
    in eval mode, no DDP collective); the shares are gathered so every process returns the same result.
    Evaluation draws no random numbers, so it does not change the training's random stream.
    """
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    results = {}
    for task_id, (task, ds) in enumerate(zip(tasks, eval_sets)):
        rows = list(range(rank, len(ds), world))
        lengths = [len(x) for x in ds.select(rows)["input_ids"]] if rows else []
        rows = [r for _, r in sorted(zip(lengths, rows))]
        local = []
        with torch.inference_mode(), accelerator.autocast():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                batch = {k: v.to(accelerator.device) for k, v in collator(rows_to_features(ds, chunk)).items()}
                labels = batch.pop("labels")
                logits = net(**batch).logits.float()  # (b, K)
                preds = logits[:, 0] if task.kind == "regression" else logits.argmax(-1)  # (b,)
                local.extend(zip(chunk, preds.tolist(), labels.tolist()))
        gathered = gather_object(local) if world > 1 else local
        gathered = sorted(gathered)
        results[task.name] = compute_task_metrics(task, [g[1] for g in gathered], [g[2] for g in gathered])
    net.train(was_training)
    return {"tasks": results, "average": glue_average(results)}


# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What one training run works with: built by `setup` (model, data) and `prepare` (sampler, optimiser)."""

    cfg: RunConfig
    tasks: list[TaskDef]
    accelerator: Accelerator
    model: Any
    parameter_counts: dict[str, int]
    train_sets: list
    eval_sets: list
    collator: Any
    resume_path: Path | None
    sampler: TaskSampler | None = None
    batches: MultiTaskBatches | None = None
    scorer: EntropyScorer | None = None
    optimizer: Any = None
    scheduler: Any = None
    is_regression: torch.Tensor | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0

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


def setup(cfg: RunConfig) -> Run:
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
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],  # heads of absent tasks
    )
    try:
        check_output_dir(cfg)
        accelerator.wait_for_everyone()  # every process has checked before anyone writes
        set_seed(t.seed)  # the same initialisation of the new parameters on every process
        model, counts = build_model(cfg, tasks)
        train_sets, eval_sets, collator = get_dataloaders(cfg, tasks, model.tokenizer, accelerator)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise RunSetupError(str(e)) from e
    return Run(cfg, tasks, accelerator, model, counts, train_sets, eval_sets, collator, resume_path)


def build_optimizer(model, t, total_steps: int):
    """AdamW (no weight decay on biases and LayerNorm weights), linear warm-up then linear decay to 0."""
    optimizer = torch.optim.AdamW(optimizer_groups(model, t.weight_decay), lr=t.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def prepare(run: Run) -> None:
    """Build the sampler (RunSetupError on bad settings); write the resolved configuration; build the batches,
    scorer, optimiser and schedule."""
    cfg, t, acc = run.cfg, run.cfg.train, run.accelerator
    world = acc.num_processes  # the sampler first: its errors must leave the output folder untouched
    try:
        run.sampler = make_sampler(cfg.sampling.strategy, [len(run.train_sets[i]) for i in run.trained_ids],
                                   t.batch_size * world,
                                   seed=t.seed, rank=acc.process_index, world_size=world,
                                   temperature=cfg.sampling.temperature,
                                   min_rows_per_task=cfg.sampling.min_rows_per_task,
                                   warmup_steps=cfg.sampling.warmup_steps,
                                   regression_tasks=[run.tasks[i].kind == "regression" for i in run.trained_ids],
                                   regression_scores=cfg.sampling.regression_scores,
                                   task_names=[run.tasks[i].name for i in run.trained_ids],
                                   regression_score_source=cfg.sampling.regression_score_source,
                                   candidates_per_task=cfg.sampling.candidates_per_task)
    except ValueError as e:
        raise RunSetupError(f"Bad sampling settings: {e}") from e
    if acc.is_main_process:
        run.out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite_output_dir and run.resume_path is None:
            clear_previous_run(run.out)
        remove_unfinished_saves(run.out)
        (run.out / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
    acc.wait_for_everyone()
    run.steps_per_epoch = math.ceil(run.sampler.epoch_batches(t.epoch_length) / t.gradient_accumulation_steps)
    run.total_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * run.steps_per_epoch))
    optimizer, run.scheduler = build_optimizer(run.model, t, run.total_steps)
    run.model, run.optimizer = acc.prepare(run.model, optimizer)
    # Not prepared (a prepared scheduler steps once per process per update); saved with the checkpoints.
    acc.register_for_checkpointing(run.scheduler)
    run.batches = MultiTaskBatches(run.sampler, [run.train_sets[i] for i in run.trained_ids], run.collator,
                                   acc.device, task_ids=run.trained_ids, num_tasks=len(run.tasks))
    run.scorer = EntropyScorer(acc, run.model, run.batches, t.eval_batch_size, cfg.sampling.score_mode) \
        if run.sampler.needs_scorer else None
    run.is_regression = torch.tensor([task.kind == "regression" for task in run.tasks], device=acc.device)


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
            raise KeyboardInterrupt(stopped_at_once_line(cfg.output_dir, command_line, world, stop.caught)) \
                from interrupted


def _train(cfg: RunConfig, command_line: str, stop: StopRequest) -> dict[str, Any]:
    """`train` with ``stop`` catching SIGINT/SIGTERM from the moment the output folder holds the run."""
    start_time = time.time()
    run = setup(cfg)
    prepare(run)
    stop.catch()  # the folder holds this run now: SIGINT/SIGTERM finish a step, write a checkpoint and stop
    t, acc = run.cfg.train, run.accelerator
    state, exact = _start_state(run)
    if state is None:  # resumed a finished run
        acc.end_training()
        return json.loads((run.out / RESULTS_FILE).read_text(encoding="utf-8"))
    if t.report_to != "none":
        acc.init_trackers("camtl", config=flat_hparams(run.cfg))
    counts = run.parameter_counts
    train_rows = [len(ds) if ds is not None else 0 for ds in run.train_sets]
    log(f"{len(run.tasks)} tasks {run.names}, train rows {train_rows}, dev rows "
                f"{[len(ds) for ds in run.eval_sets]}; {run.cfg.sampling.strategy} sampling; global batch "
                f"{run.sampler.batch_size} x {t.gradient_accumulation_steps} accumulation on {acc.num_processes} "
                f"process(es); {run.total_steps} steps" + (" (max_steps; epochs ignored)" if t.max_steps else "")
                + f"; trainable parameters {counts['trainable']:,} of {counts['total']:,}")

    step = state["step"]
    stop_at = run.total_steps if t.max_steps_this_run is None else min(run.total_steps, step + t.max_steps_this_run)
    progress = tqdm(total=run.total_steps, initial=step, desc="train", disable=not acc.is_local_main_process)
    run.model.train()
    while step < stop_at:
        _train_step(run, state)
        step = state["step"] = step + 1
        progress.update(1)
        if step % t.log_every == 0 or step == run.total_steps:
            entry = _close_window(state, step, run.scheduler.get_last_lr()[0], run.names)
            progress.set_postfix(loss=f"{entry['loss']:.4f}")
            acc.log({"train/loss": entry["loss"], "train/lr": entry["lr"],
                     **{f"train/loss_{k}": v for k, v in entry["tasks"].items()}}, step=step)
        if (t.eval_every and step % t.eval_every == 0) or step == run.total_steps:
            _evaluate_and_keep_best(run, state, step)
        if t.save_every and (step % t.save_every == 0 or step == run.total_steps):
            state["wall_time_s"] += time.time() - start_time
            start_time = time.time()
            save_checkpoint(acc, run.out, step, state, run.sampler, t.save_total_limit)
        if stop.agreed(acc):
            break
    stop.release()
    progress.close()
    state["wall_time_s"] += time.time() - start_time
    if stop.signal_name and step < run.total_steps:
        return _stop_on_signal(run, state, stop.signal_name, command_line)
    if step < run.total_steps:
        log(f"Stopped after step {step} of {run.total_steps} (max_steps_this_run); resume with "
                    "--resume_from_checkpoint latest")
        acc.end_training()
        return {"interrupted": True, "step": step, "total_steps": run.total_steps,
                "data_fraction": _fraction(run.sampler, run.trained_names)}
    results = _finish(run, state, exact if run.resume_path is not None else None, command_line)
    acc.end_training()
    return results


def _stop_on_signal(run: Run, state: dict[str, Any], signal_name: str, command_line: str) -> dict[str, Any]:
    """After SIGINT/SIGTERM: a checkpoint of the step reached (unless one was just saved), then one line."""
    acc, t, step = run.accelerator, run.cfg.train, state["step"]
    checkpoint = run.out / CHECKPOINTS_DIR / f"checkpoint-{step}"
    if not (t.save_every and step % t.save_every == 0):
        checkpoint = save_checkpoint(acc, run.out, step, state, run.sampler, t.save_total_limit)
    acc.end_training()
    log(stopped_line(signal_name, step, run.total_steps, checkpoint, command_line, acc.num_processes),
        logging.WARNING)
    return {"interrupted": True, "signal": signal_name, "step": step, "total_steps": run.total_steps,
            "checkpoint": str(checkpoint), "data_fraction": _fraction(run.sampler, run.trained_names)}


def _start_state(run: Run) -> tuple[dict[str, Any] | None, bool]:
    """A fresh trainer state, or the checkpoint's (model, optimizer, sampler, RNG restored); None when the
    checkpoint already finished the run."""
    if run.resume_path is None:
        set_seed(run.cfg.train.seed, device_specific=True)  # each process its own dropout masks
        return {"step": 0, "best": None, "eval_history": [], "loss_history": [], "wall_time_s": 0.0,
                "world_size": run.accelerator.num_processes, "global_batch_size": run.sampler.batch_size,
                "total_steps": run.total_steps, "window": _empty_window(len(run.tasks))}, True
    state, exact = load_checkpoint(run.accelerator, run.resume_path, run.sampler)
    _drop_stale_best(run.out, state)
    if state["step"] >= run.total_steps and (run.out / RESULTS_FILE).is_file():
        log(f"{run.out} already finished its {run.total_steps} steps: nothing to resume")
        return None, exact
    log(f"Resumed from {run.resume_path} at step {state['step']}"
                + ("" if exact else " (another number of processes: other dropout masks)"))
    return state, exact


def _train_step(run: Run, state: dict[str, Any]) -> None:
    """One optimizer step: ``gradient_accumulation_steps`` batches, clipping, AdamW, schedule."""
    acc, t = run.accelerator, run.cfg.train
    for _ in range(t.gradient_accumulation_steps):
        with acc.accumulate(run.model):
            batch = run.batches.next(run.scorer)
            loss, task_losses = _forward_backward(run, batch)
            if acc.sync_gradients and t.max_grad_norm > 0:
                acc.clip_grad_norm_(run.model.parameters(), t.max_grad_norm)
            run.optimizer.step()
            if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                run.scheduler.step()
            run.optimizer.zero_grad()
        _add_to_window(state["window"], acc, loss, task_losses)


def _forward_backward(run: Run, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradients of one batch; returns (loss, per-task mean losses) for logging.

    With ``train.group_by_length`` the batch is cut into length-sorted pieces (`length_pieces`) whose gradients
    accumulate (without a DDP all-reduce but for the last piece). Each piece's loss is its share of the whole
    batch's (`global_batch_loss`), so the pieces together differentiate exactly the loss of the uncut batch.
    """
    acc, world = run.accelerator, run.accelerator.num_processes
    lengths = batch["attention_mask"].sum(-1).tolist()  # (b,) real tokens per row
    pieces = length_pieces(lengths) if run.cfg.train.group_by_length else [list(range(len(lengths)))]
    if len(pieces) == 1:
        output = run.model(**batch)
        loss = output.loss if world == 1 else global_batch_loss(
            output.logits, batch["labels"], batch["task_ids"], run.is_regression, run.batches.task_counts, world)
        acc.backward(loss)
        return loss, output.task_losses
    total = torch.zeros((), device=acc.device)
    task_sums = torch.zeros(len(run.tasks), device=acc.device)  # (num_tasks,) summed per-example losses
    for k, piece in enumerate(pieces):
        rows = torch.as_tensor(piece, device=acc.device)
        width = max(lengths[i] for i in piece)
        if batch["attention_mask"][rows, width:].any():  # padded on the left: keep the full width
            width = batch["attention_mask"].shape[1]
        part = {name: value[rows, :width] if value.dim() == 2 else value[rows] for name, value in batch.items()}
        sync = contextlib.nullcontext() if k == len(pieces) - 1 else acc.no_sync(run.model)
        with sync:
            output = run.model(**part)
            loss = global_batch_loss(output.logits, part["labels"], part["task_ids"], run.is_regression,
                                     run.batches.task_counts, world)
            acc.backward(loss)
        total += loss.detach()
        counts = torch.bincount(part["task_ids"], minlength=len(run.tasks))  # (num_tasks,)
        task_sums += torch.nan_to_num(output.task_losses.float()) * counts
    counts = torch.bincount(batch["task_ids"], minlength=len(run.tasks)).float()  # (num_tasks,)
    return total, torch.where(counts > 0, task_sums / counts.clamp(min=1), torch.full_like(task_sums, float("nan")))


def _finish(run: Run, state: dict[str, Any], exact: bool | None, command_line: str | None) -> dict[str, Any]:
    """Put the final model (best or last) in the output folder and write results.json."""
    acc, t, out = run.accelerator, run.cfg.train, run.out
    final = state["best"] if t.final_model == "best" and state["best"] is not None else state["eval_history"][-1]
    if acc.is_main_process and t.final_model == "best" and (out / BEST_DIR).is_dir():
        publish_model(out / BEST_DIR, out)
    acc.wait_for_everyone()
    if t.final_model == "last" or not (out / "config.json").is_file():
        save_model(acc, run.model, out / ".last")
        if acc.is_main_process:
            publish_model(out / ".last", out)
    acc.wait_for_everyone()
    fraction = _fraction(run.sampler, run.trained_names)
    steps = state["step"]
    results = {
        "tasks": final["metrics"]["tasks"],
        "average": final["metrics"]["average"],
        "final_model": t.final_model,
        "final_model_step": final["step"],
        "last": state["eval_history"][-1],
        "eval_history": state["eval_history"],
        "steps": steps,
        "steps_per_epoch": run.steps_per_epoch,
        "epochs": steps / run.steps_per_epoch,
        "examples_trained": steps * run.sampler.batch_size * t.gradient_accumulation_steps,
        "wall_time_s": round(state["wall_time_s"], 2),
        "data_fraction": fraction,
        "parameters": run.parameter_counts,
        "eval_rows": {task.name: len(ds) for task, ds in zip(run.tasks, run.eval_sets)},
        "majority_class": majority_class_reference(  # the floor: a task not trained here takes its dev labels
            run.tasks, [(tr if tr is not None else ev)["labels"] for tr, ev in zip(run.train_sets, run.eval_sets)],
            [ev["labels"] for ev in run.eval_sets]),
        "sampling": sampling_summary(run),
        "world_size": acc.num_processes,
        "global_batch_size": run.sampler.batch_size,
        "mixed_precision": t.mixed_precision,
        "resumed_exactly": exact,
        "train_loss": state["loss_history"][-1]["loss"] if state["loss_history"] else None,
        "loss_history": state["loss_history"],
        "command_line": command_line or " ".join(shlex.quote(a) for a in sys.argv),
    }
    if acc.is_main_process:
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_model_card(out, results, training_config=config_to_dict(run.cfg))  # the checkpoint's README.md
    log(f"Dev average {results['average']:.4f} (step {final['step']}); "
                + ", ".join(f"{k}={v['main']:.4f}" for k, v in results["tasks"].items()))
    log(f"Data used: {fraction['overall']:.1%} of the training rows ("
                + ", ".join(f"{k} {v:.1%}" for k, v in fraction["per_task"].items())
                + f"); wall time {results['wall_time_s']:.0f}s; model in {out}")
    return results


# ----- small helpers of the loop --------------------------------------------------------------------------------------
def _empty_window(num_tasks: int) -> dict[str, Any]:
    return {"loss": 0.0, "n": 0, "task_sum": [0.0] * num_tasks, "task_n": [0] * num_tasks}


def _add_to_window(window: dict[str, Any], accelerator: Accelerator, loss: torch.Tensor,
                   task_losses: torch.Tensor) -> None:
    """Add one batch's loss (the mean of the processes' losses: the global batch's loss) and its per-task
    losses (averaged over the processes that had the task) to the logging window."""
    task_losses = task_losses.detach().float()  # (num_tasks,), nan where absent
    present = ~torch.isnan(task_losses)
    stats = torch.cat([loss.detach().float().reshape(1), torch.nan_to_num(task_losses), present.float()])
    if accelerator.num_processes > 1:
        stats = accelerator.reduce(stats, "sum")
    stats = stats.tolist()
    n_tasks = len(window["task_sum"])
    window["loss"] += stats[0] / accelerator.num_processes
    window["n"] += 1
    for i in range(n_tasks):
        window["task_sum"][i] += stats[1 + i]
        window["task_n"][i] += round(stats[1 + n_tasks + i])


def _close_window(state: dict[str, Any], step: int, lr: float, names: Sequence[str]) -> dict[str, Any]:
    w = state["window"]
    entry = {"step": step, "loss": w["loss"] / max(w["n"], 1), "lr": lr,
             "tasks": {name: w["task_sum"][i] / w["task_n"][i] for i, name in enumerate(names) if w["task_n"][i]}}
    state["loss_history"].append(entry)
    state["window"] = _empty_window(len(names))
    return entry


def sampling_summary(run: Run) -> dict[str, Any]:
    """The sampling settings in effect (the uncertainty floor resolved to its number of rows)."""
    s = run.cfg.sampling
    summary: dict[str, Any] = {"strategy": s.strategy}
    if s.strategy == "temperature":
        summary["temperature"] = s.temperature
    if s.strategy == "uncertainty":
        names = [run.tasks[i].name for i in run.trained_ids]
        summary.update(min_rows_per_task=run.sampler.min_rows_per_task, warmup_steps=run.sampler.warmup_steps,
                       regression_scores=s.regression_scores, score_mode=s.score_mode,
                       score_sources={names[t]: names[src] for t, src in enumerate(run.sampler.score_source)
                                      if src != t}, candidates_per_task=run.sampler.pool)
    return summary


def _fraction(sampler, names: Sequence[str]) -> dict[str, Any]:
    f = sampler.data_fraction()
    return {"overall": f["overall"], "per_task": dict(zip(names, f["per_task"])),
            "used_rows": dict(zip(names, f["used_rows"])), "total_rows": dict(zip(names, f["total_rows"]))}


def _evaluate_and_keep_best(run: Run, state: dict[str, Any], step: int) -> None:
    """Evaluate every task; save the model to best/ when the average beats the best so far."""
    cfg, accelerator = run.cfg, run.accelerator
    metrics = evaluate(run.model, run.eval_sets, run.tasks, run.collator, accelerator, cfg.train.eval_batch_size)
    entry = {"step": step, "metrics": metrics, "data_fraction": run.sampler.data_fraction()["overall"]}
    state["eval_history"].append(entry)
    accelerator.log({"eval/average": metrics["average"],
                     **{f"eval/{k}": v["main"] for k, v in metrics["tasks"].items()}}, step=step)
    log(f"step {step}: dev average {metrics['average']:.4f} ("
                + ", ".join(f"{k} {v['main']:.4f}" for k, v in metrics["tasks"].items())
                + f"); data used {entry['data_fraction']:.1%}")
    if cfg.train.final_model == "best" and (state["best"] is None or metrics["average"] > state["best"]["metrics"]["average"]):
        state["best"] = entry
        save_model(accelerator, run.model, run.out / BEST_DIR, extra={"step": step, **metrics})


def _drop_stale_best(out: Path, state: dict[str, Any]) -> None:
    """On resume: a best/ model from steps after the checkpoint makes the checkpoint's "best" unreliable.

    If best/ was written after the checkpoint (by the interrupted run), forget the recorded best so the
    next evaluation decides again; with exact resumption that evaluation reproduces the same choice.
    """
    marker = out / BEST_DIR / "best.json"
    best_step = json.loads(marker.read_text())["step"] if marker.is_file() else None
    recorded = state["best"]["step"] if state.get("best") else None
    if best_step != recorded:
        state["best"] = None


# --------------------------------------------------------------------------------------------------------------------
def main(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line (or ``args``) and train; returns the results."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    cfg = parse_config(args)
    command = " ".join(shlex.quote(a) for a in (["train.py", *args] if args is not None else sys.argv))
    return train(cfg, command_line=command)


def exit_status(results: dict[str, Any]) -> int:
    """0 for a finished run (or one stopped by max_steps_this_run), 128 + the signal's number for one stopped by a
    signal (130 for Ctrl-C, 143 for SIGTERM, as a shell reports a process that the signal ended)."""
    return 128 + signal.Signals[results["signal"]].value if results.get("signal") else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        sys.exit(exit_status(main()))
    except RunSetupError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt as stopped:  # a second Ctrl-C: its message says how to resume
        message = str(stopped)
    print(message, file=sys.stderr)  # after the except block has freed the run (its progress bar is closed)
    sys.exit(128 + signal.SIGINT.value)
