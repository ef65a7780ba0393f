"""Build a run from its configuration: its tasks, its model (from a BERT checkpoint or a trained CA-MTL model) and its
tokenized data. Everything here fails on bad input before any training starts (`RunSetupError` in `camtl.trainer`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager

import datasets
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from modeling_camtl import CaMtlForMultiTask, is_camtl_parameter

from .config import RunConfig, resolve_path
from .leakage import filter_leaks
from .readers import MultiTaskCollator, take_rows, tokenize_split
from .tasks import TaskDef, get_task, load_split, resolve_labels
from .weights import naming_damaged_weights

logger = logging.getLogger("camtl.train")


def log(message: str, level: int = logging.INFO) -> None:
    """Log on the main process only (``RANK`` is set by ``accelerate launch`` and ``torchrun``)."""
    if os.environ.get("RANK", "0") == "0":
        logger.log(level, message)


class RunSetupError(ValueError):
    """Bad input found before training starts (the message names the problem and the valid choices)."""


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
            raise ValueError(
                f"data.tasks[{i}] ({task.name}) declares no validation_file: every task needs dev data "
                "for evaluation and model selection."
            )
        tasks.append(task)
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"data.tasks names {duplicates} more than once; each task may appear once.")
    return tasks


def build_model(cfg: RunConfig, tasks: Sequence[TaskDef]) -> tuple[CaMtlForMultiTask, dict[str, int]]:
    """CA-MTL on ``cfg.model.base_model`` with one head per task, frozen per ``cfg.model.trainable``.

    Regression heads start at the middle of their ``label_range`` (`center_regression_heads`).
    Returns the model (with ``model.tokenizer``) and its parameter counts ``{"trainable", "frozen", "total"}``.
    """
    if cfg.model.init_from:
        return continue_model(cfg, tasks)
    with naming_damaged_weights(cfg.model.base_model):  # from_bert warns itself about missing BERT parameters
        model, info = CaMtlForMultiTask.from_bert(
            cfg.model.base_model, tasks=[t.to_spec() for t in tasks], output_loading_info=True, **dict(cfg.model.camtl)
        )
    new = [k for k in info.get("missing_keys", []) if is_camtl_parameter(k)]
    log(f"Loaded {cfg.model.base_model}: {len(new)} new CA-MTL/head tensors initialised")
    if getattr(model, "tokenizer", None) is None:
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(cfg.model.base_model)
    center_regression_heads(model, model.config.task_names)
    if cfg.data.max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"Bad value data.max_length={cfg.data.max_length}: the base model has "
            f"{model.config.max_position_embeddings} positions."
        )
    counts = model.set_trainable(cfg.model.trainable)
    counts["total"] = counts["trainable"] + counts["frozen"]
    return model, counts


def center_regression_heads(model: CaMtlForMultiTask, names: Sequence[str]) -> None:
    """Start the regression heads among ``names`` at the middle of their ``label_range``: a smaller first loss, and an
    untrained regression head counts as maximally uncertain for MT-Uncertainty, as an untrained classifier does (at 0,
    the bottom of STS-B's range, its rows would score ~0 entropy and never be sampled)."""
    with torch.no_grad():
        for spec in model.config.tasks:
            if spec["name"] in names and spec["kind"] == "regression":
                model.heads[spec["name"]].bias.fill_(sum(spec["label_range"]) / 2)


def order_for_init(cfg: RunConfig, tasks: Sequence[TaskDef]) -> list[TaskDef]:
    """With ``model.init_from``: the run's tasks in the trained model's id order, then the new tasks.

    ValueError when a task of the model is missing from ``data.tasks`` or declared differently."""
    from modeling_camtl import CaMtlConfig

    old = CaMtlConfig.from_pretrained(cfg.model.init_from).tasks
    by_name = {t.name: t for t in tasks}
    missing = [spec["name"] for spec in old if spec["name"] not in by_name]
    if missing:
        raise ValueError(
            f"data.tasks must list every task of model.init_from ({[s['name'] for s in old]}): "
            f"{missing} missing. Their dev sets are evaluated to show they did not change."
        )
    for spec in old:
        mine = by_name[spec["name"]].to_spec()
        if (mine["kind"], mine["labels"]) != (spec["kind"], spec["labels"]):
            raise ValueError(
                f"Task {spec['name']!r} is declared as {mine['kind']} {mine['labels']} in data.tasks "
                f"but the model in init_from has it as {spec['kind']} {spec['labels']}."
            )
    old_names = [spec["name"] for spec in old]
    return [by_name[n] for n in old_names] + [t for t in tasks if t.name not in old_names]


def continue_model(cfg: RunConfig, tasks: Sequence[TaskDef]) -> tuple[CaMtlForMultiTask, dict[str, int]]:
    """Load a trained CA-MTL model (``model.init_from``), add the new tasks of ``tasks`` and freeze per
    ``model.trainable`` (``new_tasks``: only the added tasks' embedding rows, heads and own adapters train)."""
    from transformers import AutoTokenizer

    with naming_damaged_weights(cfg.model.init_from):
        model = CaMtlForMultiTask.from_pretrained(cfg.model.init_from)
    model.tokenizer = AutoTokenizer.from_pretrained(cfg.model.init_from)
    new = [t for t in tasks if t.name not in model.config.task_names]
    for task in new:
        model.add_task(task.to_spec(), init_from="mean")
    center_regression_heads(model, [t.name for t in new])
    if cfg.model.new_task_adapter_size and new:
        added = model.add_task_adapters([t.name for t in new], size=cfg.model.new_task_adapter_size)
        log(
            f"Task adapters of size {cfg.model.new_task_adapter_size} for {[t.name for t in new]}: {added:,} parameters"
        )
    log(f"Continuing from {cfg.model.init_from}: tasks {model.config.task_names}, new {[t.name for t in new]}")
    if cfg.model.trainable == "new_tasks":
        if not new:
            raise ValueError(
                "model.trainable=new_tasks needs at least one task in data.tasks that the model in "
                f"model.init_from does not have (it has {model.config.task_names})"
            )
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


def protected_tasks(cfg: RunConfig, tasks: Sequence[TaskDef]) -> dict[str, TaskDef]:
    """The tasks whose dev sets no training row may leak: ``data.tasks`` and ``data.protected_tasks``."""
    protected = {t.name: t for t in tasks}
    for name in cfg.data.protected_tasks:
        task = get_task(name)
        protected.setdefault(task.name, task)
    return protected


def clean_splits(cfg: RunConfig, tasks: Sequence[TaskDef], trained: Sequence[int], progress=None):
    """The whole training sets of the ``trained`` task ids, without their leaking rows (`camtl.leakage`), and the
    whole dev sets of the protected tasks: ``(train {name: Dataset}, dev {name: Dataset}, leakage counts)``.
    Caps (``data.max_train_rows``, ``sampling.task_budgets``) are not applied here."""
    d = cfg.data
    extra_dir = resolve_path(d.extra_dir) if d.extra_dir is not None else None
    load = functools.partial(load_split, data_dir=d.data_dir, extra_dir=extra_dir)

    def step(text: str) -> None:
        if progress is not None:
            progress.set_postfix_str(text)
            progress.update()

    raw_train = {}
    for task_id in sorted(trained):
        raw_train[tasks[task_id].name] = load(tasks[task_id], "train")
        step(f"{tasks[task_id].name} train")
    protected = protected_tasks(cfg, tasks)
    dev_sets = {}
    for name, task in protected.items():
        dev_sets[name] = load(task, "validation")
        step(f"{name} validation")
    clean, leakage = filter_leaks(raw_train, dev_sets, {**protected, **{t.name: t for t in tasks}})
    step("leakage filter")
    return clean, dev_sets, leakage


def training_cap(cfg: RunConfig, name: str) -> int | None:
    """The most training rows task ``name`` keeps: ``data.max_train_rows`` and its ``sampling.task_budgets`` entry."""
    caps = [c for c in (cfg.data.max_train_rows, cfg.sampling.task_budgets.get(name)) if c is not None]
    return min(caps) if caps else None


def get_dataloaders(cfg: RunConfig, tasks: Sequence[TaskDef], tokenizer, accelerator: Accelerator):
    """Load, check and tokenize every task's train and dev split (cached ``datasets.map``), the leakage filter between.

    Every training set is read whole, then loses the rows that leak a protected dev set (`clean_splits`: the dev
    sets of ``data.tasks`` and of ``data.protected_tasks``, whole even when ``data.max_eval_rows`` evaluates fewer
    rows), then is capped at `training_cap` rows (a seeded sample).

    Returns ``(train_sets, eval_sets, collator, leakage)``: per-task tokenized datasets in task-id order, the padding
    collator, and the filter's counts ``{task: {"rows", "dropped": {dev task: rows}, "kept"}}``. Batches are built by
    the task sampler (`camtl.sampling`) in `train`, each process its own rank-strided share; they do not go through
    ``accelerator.prepare``.
    """
    d = cfg.data
    names = [t.name for t in tasks]
    unknown = sorted(set(cfg.sampling.task_budgets) - set(names))
    if unknown:
        raise ValueError(f"sampling.task_budgets names {unknown}, which are not in data.tasks ({names}).")
    trained = set(trained_task_ids(cfg, tasks))
    train_sets: list = [None] * len(tasks)  # None: not trained in this run (model.trainable=new_tasks)
    eval_sets: list = [None] * len(tasks)
    steps = len(trained) + len(protected_tasks(cfg, tasks)) + 1
    # one progress line for all the data (train() turns datasets' bars for every split off)
    progress = tqdm(total=steps, desc="data", unit="split", disable=not accelerator.is_local_main_process)
    with accelerator.main_process_first():
        clean, dev_sets, leakage = clean_splits(cfg, tasks, sorted(trained), progress)
        for task_id, task in enumerate(tasks):
            if task_id in trained:
                cap = training_cap(cfg, task.name)
                ds = take_rows(clean[task.name], cap, cfg.train.seed if cap is not None else None)
                leakage[task.name]["kept"] = len(ds)
                train_sets[task_id] = tokenize_split(ds, tokenizer, d.max_length, task_id)
            ds = take_rows(dev_sets[task.name], d.max_eval_rows, cfg.train.seed if d.max_eval_rows else None)
            eval_sets[task_id] = tokenize_split(ds, tokenizer, d.max_length, task_id)
    progress.close()
    dropped = {name: c["dropped"] for name, c in leakage.items() if c["dropped"]}
    log(
        f"Leakage filter (dev sets of {sorted(dev_sets)}): dropped "
        + (
            "; ".join(
                f"{name} {sum(by.values())} ({', '.join(f'{k} {v}' for k, v in by.items())})"
                for name, by in dropped.items()
            )
            or "nothing"
        )
    )
    return train_sets, eval_sets, MultiTaskCollator(tokenizer, tasks=tasks), leakage


@contextmanager
def own_progress_bars_only():
    """Inside the block, datasets' and transformers' progress bars (read, check and tokenize each split, load and save
    each model) are off: a run shows its own "data" and "train" lines. They are as they were after the block."""
    libraries = [
        (datasets.is_progress_bar_enabled(), datasets.enable_progress_bars, datasets.disable_progress_bars),
        (hf_logging.is_progress_bar_enabled(), hf_logging.enable_progress_bar, hf_logging.disable_progress_bar),
    ]
    for _, _, disable in libraries:
        disable()
    try:
        yield
    finally:
        for was, enable, disable in libraries:
            (enable if was else disable)()
