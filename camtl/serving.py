"""Serving on CPU: export a CA-MTL model to ONNX, quantise it to int8, run it with ONNX Runtime, choose a backend.

    python -m camtl.serving export MODEL OUT                 # OUT/model.onnx + model_quantized.onnx, tokenizer, card
    python -m camtl.serving export MODEL OUT --data-dir ../shared/data/glue   # + every variant's dev scores
    python -m camtl.serving predict MODEL --backend auto --task sst2 "a gripping film"

| backend | what runs | from |
|---|---|---|
| ``torch`` | the PyTorch model (``CaMtlForMultiTask``) | a checkpoint folder or Hub id |
| ``onnx`` | ``model.onnx`` (fp32) in ONNX Runtime: logits within 1e-4 of PyTorch's (checked at export, tested) | an export folder, or a checkpoint (exported once into ``$CAMTL_CACHE/onnx-<sha>``) |
| ``onnx-int8`` | ``model_quantized.onnx``: ONNX Runtime's dynamic int8 quantisation of the weights | the same |
| ``auto`` | the fastest variant the export measured whose dev scores hold: int8 only where it moved no task by more than :data:`SCORE_TOLERANCE` points (needs ``--data-dir`` at export), else ONNX fp32 when it was faster than PyTorch, else PyTorch | the same |

The export (:func:`export_onnx`) uses ``torch.onnx.export(..., dynamo=True)`` on the model with eager attention
(the dynamo exporter fails on ``scaled_dot_product_attention`` with a dynamic sequence length), one self-contained
file (``external_data=False``), inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T) and ``task_ids``
(B,), all int64, with dynamic batch and length: a batch may mix tasks, as in PyTorch. Outputs: ``logits`` (B, K) and
``entropy`` (B,), as :class:`~modeling_camtl.modeling_camtl.CaMtlMultiTaskOutput` has them. The folder carries the
tokenizer, ``config.json`` (the task table) with its configuration file, the card and ``results.json``, and
``onnx_export.json``: versions, files with their sha256 (a damaged file is named at load), the parity measured, the
speed of every variant relative to PyTorch and, with ``--data-dir``, their dev scores.

Why not Optimum: ``optimum-onnx`` (0.1.0, the package that now holds Optimum's ONNX exporters and ``ORTModel``)
requires ``transformers<4.58``; this project runs transformers 5. So the export is ``torch.onnx`` and the runner,
:class:`OnnxCaMtlForMultiTask`, is a small ``onnxruntime`` wrapper that the project's pipeline drives like the
PyTorch model. Measured speed and scores: ``BENCHMARKS.md`` ("Serving on CPU").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKENDS = ("torch", "onnx", "onnx-int8", "auto")
ONNX_FILE, INT8_FILE, MANIFEST_FILE = "model.onnx", "model_quantized.onnx", "onnx_export.json"
VARIANT_FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "task_ids")
OUTPUT_NAMES = ("logits", "entropy")
OPSET = 18
FORMAT_VERSION = 1
#: Largest |ONNX fp32 logit - PyTorch logit| the export accepts (the parity tests hold it on real rows).
PARITY_TOLERANCE = 1e-4
#: A variant whose dev score moves more than this many points (of 100) on any task is not chosen by ``auto``.
SCORE_TOLERANCE = 0.5
#: Files of a checkpoint folder that travel with its export (when present).
CARRIED_FILES = ("results.json", "training_config.yaml")


class OnnxModelError(ValueError):
    """An ONNX file that is damaged, incomplete or does not match its export folder; the message names it."""


# --------------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------------
class _ExportWrapper(torch.nn.Module):
    """The model's serving outputs as a tuple of tensors: what the ONNX graph computes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, task_ids):
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, task_ids=task_ids
        )
        return out.logits, out.entropy  # (B, K), (B,)


def load_torch_model(model_or_path, attn_implementation: str | None = None):
    """``(model in eval mode, tokenizer)`` of a checkpoint folder or Hub id (or a model object with ``.tokenizer``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not isinstance(model_or_path, (str, os.PathLike)):
        if getattr(model_or_path, "tokenizer", None) is None:
            raise ValueError("A model object needs its tokenizer (model.tokenizer = ...); or pass a checkpoint folder")
        return model_or_path.eval(), model_or_path.tokenizer
    from .weights import naming_damaged_weights

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with naming_damaged_weights(model_or_path):
        model = AutoModelForSequenceClassification.from_pretrained(str(model_or_path), trust_remote_code=True, **kwargs)
    if getattr(model.config, "model_type", None) != "camtl":
        raise ValueError(
            f"{model_or_path} is not a CA-MTL checkpoint (config.model_type "
            f"{getattr(model.config, 'model_type', None)!r}, expected 'camtl')"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(model_or_path), trust_remote_code=True)
    return model.eval(), tokenizer


def example_batch(config, tokenizer, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """A padded mixed-task batch of made-up texts (every task once, then again): the export's sample input and the
    first parity check. Rows have different lengths, so padding is exercised."""
    tasks = config.tasks
    texts, pairs, ids = [], [], []
    for row in range(max(batch_size, 2)):
        task = tasks[row % len(tasks)]
        words = " ".join(["a gripping and funny film"] * (1 + row % 3))
        texts.append(words)
        pairs.append("someone plays a tune" if len(task["text_fields"]) == 2 else None)
        ids.append(row % len(tasks))
    encoded = [tokenizer(t, p, return_token_type_ids=True) for t, p in zip(texts, pairs)]
    from transformers import DataCollatorWithPadding

    batch = dict(
        DataCollatorWithPadding(tokenizer, return_tensors="pt")([{k: e[k] for k in INPUT_NAMES[:3]} for e in encoded])
    )  # (B, T) each
    batch["task_ids"] = torch.tensor(ids)  # (B,)
    return batch


def export_onnx(
    model_or_path,
    output_dir,
    *,
    quantize: bool = True,
    data_dir: str | None = None,
    max_eval_rows: int | None = None,
    measure_speed: bool = True,
) -> Path:
    """Export a CA-MTL model (a checkpoint folder, Hub id or model object with ``.tokenizer``) to ``output_dir``.

    Writes ``model.onnx`` (fp32) and, with ``quantize``, ``model_quantized.onnx`` (dynamic int8), plus the tokenizer,
    config, card, results and ``onnx_export.json`` (see the module docstring). The folder is written under a
    temporary name and renamed when complete. Raises ``RuntimeError`` when ONNX Runtime's logits differ from
    PyTorch's by more than :data:`PARITY_TOLERANCE` on a mixed-task batch. ``data_dir`` (GLUE layout): also score
    every variant on its tasks' dev sets (``max_eval_rows`` per task), which ``auto`` needs to offer int8.
    """
    source = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None
    model, tokenizer = load_torch_model(model_or_path, attn_implementation="eager")
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".exporting-", dir=output_dir.parent))
    previous = model.config._attn_implementation
    try:
        model.config._attn_implementation = "eager"  # a model object may come with sdpa
        batch = example_batch(model.config, tokenizer)
        _export_graph(model, batch, tmp / ONNX_FILE)
        model.config._attn_implementation = previous
        parity = max_logit_difference(model, OnnxCaMtlForMultiTask(tmp / ONNX_FILE, model.config), batch)
        if not parity <= PARITY_TOLERANCE:
            raise RuntimeError(
                f"The ONNX export's logits differ from PyTorch's by {parity:.3g} (more than "
                f"{PARITY_TOLERANCE:g}) on a mixed-task batch: not written to {output_dir}"
            )
        if quantize:
            quantize_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
        _write_companions(model, tokenizer, source, tmp)
        manifest = {
            "format_version": FORMAT_VERSION,
            "opset": OPSET,
            "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES),
            "versions": _versions(),
            "files": {name: _sha256(tmp / name) for name in (ONNX_FILE, INT8_FILE) if (tmp / name).is_file()},
            "parity_max_abs_logit_difference": parity,
        }
        if measure_speed:
            manifest["speed"] = measure_variants(model, tmp, batch_rows(model.config, tokenizer, 32))
        if data_dir is not None:
            manifest["dev_scores"] = dev_scores(model, tokenizer, tmp, data_dir, max_eval_rows)
        _write_card(tmp, manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        model.config._attn_implementation = previous
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _export_graph(model, batch: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.onnx.export`` (dynamo) with dynamic batch and sequence length, one self-contained file."""
    batch_dim = torch.export.Dim("batch")
    length = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    shapes = {name: {0: batch_dim, 1: length} for name in INPUT_NAMES[:3]} | {"task_ids": {0: batch_dim}}
    with torch.no_grad():
        torch.onnx.export(
            _ExportWrapper(model).eval(),
            tuple(batch[name] for name in INPUT_NAMES),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def quantize_int8(onnx_path, out_path) -> Path:
    """Dynamic int8 quantisation of the weights (ONNX Runtime's ``quantize_dynamic``; activations stay fp32 and are
    quantised on the fly)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    return Path(out_path)


def _write_companions(model, tokenizer, source, folder: Path) -> None:
    """Tokenizer, config (the task table, with its configuration file for ``trust_remote_code``) and the checkpoint's
    results and training settings."""
    config = model.config
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if source is not None and Path(source).is_dir():
        for name in CARRIED_FILES + ("README.md",):
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, folder / name)


def _write_card(folder: Path, manifest: dict) -> None:
    """The checkpoint's card (or a short one) with a section on the export."""
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8").rstrip() + "\n\n" if card.is_file() else "# CA-MTL model (ONNX)\n\n"
    scores = manifest.get("dev_scores")
    lines = [
        "## ONNX export",
        "",
        f"`{ONNX_FILE}` (fp32, opset {OPSET}) computes this model's `logits` (B, K) and `entropy` (B,) from "
        "`input_ids`, `attention_mask`, `token_type_ids` (B, T) and `task_ids` (B,), all int64; a batch may mix tasks "
        "(`task_ids` indexes `config.json`'s `tasks`). Its logits were within "
        f"{manifest['parity_max_abs_logit_difference']:.2g} of PyTorch's at export.",
    ]
    if INT8_FILE in manifest["files"]:
        lines += ["", f"`{INT8_FILE}`: the same with int8 weights (ONNX Runtime's dynamic quantisation)."]
    if scores:
        lines += ["", "| task | " + " | ".join(scores) + " |", "|---|" + "---|" * len(scores)]
        for task in next(iter(scores.values()))["tasks"]:
            lines.append(
                f"| {task} | " + " | ".join(f"{100 * s['tasks'][task]['main']:.2f}" for s in scores.values()) + " |"
            )
    lines += [
        "",
        "```python",
        "from camtl.serving import OnnxCaMtlForMultiTask, load_pipeline",
        "",
        'pipe = load_pipeline(folder, backend="onnx")   # or "onnx-int8", "auto"',
        'pipe("a gripping film", task_name="sst2")',
        "```",
        "",
    ]
    card.write_text(text + "\n".join(lines), encoding="utf-8")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------
class OnnxCaMtlForMultiTask(torch.nn.Module):
    """An exported CA-MTL model run by ONNX Runtime, called like :class:`CaMtlForMultiTask`.

    ``model(input_ids, attention_mask=None, token_type_ids=None, task_ids=...)`` (tensors or arrays; ``task_ids`` may
    be names, as in PyTorch) returns a ``CaMtlMultiTaskOutput`` with ``logits`` (B, K) and ``entropy`` (B,) as torch
    tensors. It holds no parameters (a ``torch.nn.Module`` only so that pipelines and evaluation loops can call
    ``eval()``, ``to("cpu")`` and ``train(False)`` on it); ``config`` is the checkpoint's ``CaMtlConfig``.
    """

    def __init__(self, onnx_path, config, num_threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.config = config
        if not self.path.is_file():
            raise FileNotFoundError(
                f"No ONNX model at {self.path}: export one with `python -m camtl.serving export MODEL FOLDER`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ...: a file cut short or not ONNX
            raise OnnxModelError(
                f"Damaged or incomplete ONNX file {self.path} ({type(error).__name__}: "
                f"{str(error).strip()[:300]}): export it again (python -m camtl.serving export)."
            ) from error
        found = [i.name for i in self.session.get_inputs()]
        if found != list(INPUT_NAMES):
            raise OnnxModelError(f"{self.path} takes inputs {found}, not a CA-MTL export's {list(INPUT_NAMES)}")

    @classmethod
    def from_pretrained(cls, folder, quantized: bool = False, num_threads: int | None = None):
        """The runner of an export folder (``model.onnx``, or ``model_quantized.onnx`` with ``quantized``); its files
        are checked against the sha256 that ``onnx_export.json`` records."""
        from modeling_camtl.configuration_camtl import CaMtlConfig

        folder = Path(folder)
        name = INT8_FILE if quantized else ONNX_FILE
        manifest = read_export_manifest(folder)
        path = folder / name
        if not path.is_file():
            hint = " (exported without int8: export again without --no-int8)" if quantized and manifest else ""
            raise FileNotFoundError(
                f"No ONNX model at {path}{hint}: export one with `python -m camtl.serving export MODEL FOLDER`"
            )
        expected = manifest.get("files", {}).get(name)
        if expected is not None and _sha256(path) != expected:
            raise OnnxModelError(
                f"Damaged or incomplete ONNX file {path}: its sha256 is not the one "
                f"{folder / MANIFEST_FILE} records (cut short while being copied?): export it again "
                "(python -m camtl.serving export)."
            )
        return cls(path, CaMtlConfig.from_pretrained(str(folder)), num_threads=num_threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, *args, **kwargs):
        device = kwargs.get("device", args[0] if args else "cpu")
        if isinstance(device, (str, torch.device)) and torch.device(device).type != "cpu":
            raise ValueError(f"The ONNX Runtime backend runs on the CPU here, not on {device}")
        return self

    def task_id(self, task) -> int:
        return self.config.task_id(task)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        task_ids=None,
        labels=None,
        output_hidden_states=None,
        **kwargs,
    ):
        from modeling_camtl.modeling_camtl import CaMtlMultiTaskOutput

        if kwargs or labels is not None or output_hidden_states:
            given = (
                sorted(kwargs)
                + (["labels"] if labels is not None else [])
                + (["output_hidden_states"] if output_hidden_states else [])
            )
            raise ValueError(
                f"The ONNX backend computes logits and entropy only; it does not take {given} (use the "
                "PyTorch model for losses and hidden states)"
            )
        ids = _as_int64(input_ids, "input_ids")
        if ids.ndim != 2:
            raise ValueError("input_ids must be of shape (batch, seq_len)")
        bsz, seq_len = ids.shape
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Input of {seq_len} tokens is longer than the model's limit of "
                f"{self.config.max_position_embeddings} positions: truncate it (tokenizer truncation=True)"
            )
        mask = np.ones_like(ids) if attention_mask is None else _as_int64(attention_mask, "attention_mask")
        types = np.zeros_like(ids) if token_type_ids is None else _as_int64(token_type_ids, "token_type_ids")
        for name, value in (("attention_mask", mask), ("token_type_ids", types)):
            if value.shape != ids.shape:
                raise ValueError(f"{name} must have the shape of input_ids {ids.shape}, got {value.shape}")
        tasks = self._task_ids(task_ids, bsz)
        logits, entropy = self.session.run(
            list(OUTPUT_NAMES), {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "task_ids": tasks}
        )
        return CaMtlMultiTaskOutput(logits=torch.from_numpy(logits), entropy=torch.from_numpy(entropy))

    def _task_ids(self, task_ids, batch_size: int) -> np.ndarray:
        """(B,) int64 task ids from ids or names; ``ValueError`` naming the valid tasks otherwise."""
        if task_ids is None:
            raise ValueError(
                f"task_ids is required: one per row ({batch_size},). Valid tasks: {self.config.describe_tasks()}"
            )
        if isinstance(task_ids, (str, int)):
            task_ids = [task_ids] * batch_size
        if isinstance(task_ids, (list, tuple)):
            task_ids = [self.config.task_id(t) for t in task_ids]
        ids = _as_int64(task_ids, "task_ids")
        if ids.shape != (batch_size,):
            raise ValueError(f"task_ids must have shape ({batch_size},) (one task per example), got {ids.shape}")
        bad = (ids < 0) | (ids >= len(self.config.tasks))
        if bad.any():
            raise ValueError(
                f"Unknown task id(s) {sorted(set(ids[bad].tolist()))}. Valid tasks: {self.config.describe_tasks()}"
            )
        return ids


def _as_int64(value, name: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def read_export_manifest(folder) -> dict:
    """``onnx_export.json`` of an export folder (``{}`` when it has none); a newer format is an error."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format {manifest['format_version']}, newer than this camtl reads "
            f"({FORMAT_VERSION}): update the project."
        )
    return manifest


def is_export_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_FILE).is_file()


def max_logit_difference(model, runner: OnnxCaMtlForMultiTask, batch: dict[str, torch.Tensor]) -> float:
    """Largest |runner logit - model logit| over the finite entries; ``inf`` when the ``-inf`` columns differ."""
    with torch.inference_mode():
        expected = model(**batch).logits.float()  # (B, K)
    got = runner(**batch).logits  # (B, K)
    finite = torch.isfinite(expected)
    if not torch.equal(finite, torch.isfinite(got)):
        return float("inf")
    return float((got - expected)[finite].abs().max()) if finite.any() else 0.0


# --------------------------------------------------------------------------------------------------------------------
# Measuring: speed and dev scores of every variant
# --------------------------------------------------------------------------------------------------------------------
def batch_rows(config, tokenizer, batch_size: int) -> dict[str, torch.Tensor]:
    """A mixed-task batch of ``batch_size`` made-up rows (for timing at export)."""
    return example_batch(config, tokenizer, batch_size)


def measure_variants(model, folder: Path, batch: dict[str, torch.Tensor], rounds: int = 3) -> dict[str, Any]:
    """Seconds per forward pass of PyTorch fp32 and each ONNX variant in ``folder`` on ``batch``, measured interleaved
    (one pass of each per round, the median kept), and each one's speed as a ratio to PyTorch's."""
    runners = {"torch": model} | {
        name: OnnxCaMtlForMultiTask(folder / file, model.config)
        for name, file in VARIANT_FILES.items()
        if (folder / file).is_file()
    }
    times = {name: [] for name in runners}
    with torch.inference_mode():
        for runner in runners.values():  # warm-up
            runner(**batch)
        for _ in range(rounds):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner(**batch)
                times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "batch_size": int(batch["input_ids"].shape[0]),
        "threads": torch.get_num_threads(),
        "seconds": median,
        "speedup": {name: median["torch"] / s for name, s in median.items()},
    }


def dev_scores(model, tokenizer, folder: Path, data_dir: str, max_rows: int | None = None) -> dict[str, Any]:
    """Dev metrics (``camtl.trainer.evaluate``) of PyTorch fp32 and each ONNX variant in ``folder``, with each
    variant's change per task in points (of 100) on the task's main metric."""
    runners = {"torch": model} | {
        name: OnnxCaMtlForMultiTask(folder / file, model.config)
        for name, file in VARIANT_FILES.items()
        if (folder / file).is_file()
    }
    scores = {name: evaluate_dev(runner, tokenizer, data_dir, max_rows) for name, runner in runners.items()}
    reference = scores["torch"]["tasks"]
    for name, result in scores.items():
        result["delta_points"] = {
            task: 100 * (m["main"] - reference[task]["main"]) for task, m in result["tasks"].items()
        }
    return scores


def evaluate_dev(
    runner, tokenizer, data_dir: str, max_rows: int | None = None, batch_size: int = 32, mixed_precision: str = "no"
) -> dict:
    """GLUE dev metrics of a model or runner on each of its tasks (the tasks of ``runner.config``); ``mixed_precision``
    ``"bf16"``: under PyTorch's bf16 autocast (a PyTorch model only)."""
    from accelerate import Accelerator

    from .data import MultiTaskCollator, get_task, load_split, resolve_labels, tokenize_split
    from .trainer import evaluate

    tasks, sets = [], []
    limit = runner.config.max_position_embeddings
    for task_id, name in enumerate(runner.config.task_names):
        task = resolve_labels(get_task(name))
        tasks.append(task)
        sets.append(
            tokenize_split(
                load_split(task, "validation", data_dir=data_dir, max_rows=max_rows), tokenizer, limit, task_id
            )
        )
    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision == "bf16"):
        result = evaluate(
            runner, sets, tasks, MultiTaskCollator(tokenizer, tasks=tasks), Accelerator(cpu=True), batch_size
        )
    result["rows"] = {task.name: len(ds) for task, ds in zip(tasks, sets)}
    return result


# --------------------------------------------------------------------------------------------------------------------
# Choosing a backend, building the pipeline
# --------------------------------------------------------------------------------------------------------------------
def scores_hold(manifest: dict, variant: str, tolerance: float = SCORE_TOLERANCE) -> bool:
    """Whether ``variant``'s dev score is within ``tolerance`` points of PyTorch's on every task. ONNX fp32 holds by
    its parity check at export; int8 only with dev scores recorded (``export --data-dir``)."""
    if variant in ("torch", "onnx"):
        return True
    deltas = ((manifest.get("dev_scores") or {}).get(variant) or {}).get("delta_points")
    return bool(deltas) and all(d >= -tolerance for d in deltas.values())


def choose_backend(manifest: dict, torch_available: bool = True) -> str:
    """``auto``: the fastest variant the export measured (``manifest["speed"]``) whose scores hold; ``onnx`` when no
    speed was measured (faster than PyTorch in BENCHMARKS.md). ``torch_available=False`` (an export folder, which
    holds no PyTorch weights): the fastest ONNX variant, even where the export measured PyTorch faster."""
    speed = (manifest.get("speed") or {}).get("speedup")
    if not speed:
        return "onnx"
    allowed = ("torch", *VARIANT_FILES) if torch_available else tuple(VARIANT_FILES)
    candidates = [name for name in speed if name in allowed and scores_hold(manifest, name)]
    return max(candidates, key=lambda name: speed[name]) if candidates else "onnx"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return backend


def model_fingerprint(path) -> str:
    """sha256 (16 hex digits) of a checkpoint folder's config, code and weights, and of this export's format: the name
    of its cached export."""
    folder = Path(path)
    files = [
        folder / "config.json",
        *sorted(folder.glob("*.py")),
        *sorted(folder.glob("*.safetensors")),
        *sorted(folder.glob("*.bin")),
    ]
    digest = hashlib.sha256(f"camtl-onnx-{FORMAT_VERSION}-opset{OPSET}".encode())
    for file in files:
        if file.is_file():
            digest.update(file.name.encode() + b"\0" + _sha256(file).encode())
    return digest.hexdigest()[:16]


def ensure_onnx(model_path, cache=None) -> Path:
    """The export folder of ``model_path``: itself when it is one, else its export in ``$CAMTL_CACHE/onnx-<sha>``
    (made on first use, with int8; without dev scores, so ``auto`` does not choose int8 for it)."""
    if is_export_folder(model_path):
        return Path(model_path)
    if not Path(model_path).is_dir():
        raise ValueError(
            f"The ONNX backends need a local checkpoint or export folder; {model_path!r} is not a "
            "folder (download it first, or export it: python -m camtl.serving export MODEL FOLDER)"
        )
    from .default_model import cache_dir

    target = Path(cache or cache_dir()) / f"onnx-{model_fingerprint(model_path)}"
    if not is_export_folder(target):
        export_onnx(model_path, target, measure_speed=True)
    return target


def resolve_backend(model_path, backend: str = "torch") -> tuple[str, Path | None]:
    """``(backend, export folder or None)``: ``auto`` resolved through the export's manifest."""
    check_backend(backend)
    export = is_export_folder(model_path)
    if backend == "torch" and not export:
        return "torch", None
    folder = ensure_onnx(model_path)
    if backend == "auto":  # PyTorch, where the export measured it fastest, only for a checkpoint (it has the weights)
        backend = choose_backend(read_export_manifest(folder), torch_available=not export)
        if backend == "torch":
            return "torch", None
    if backend == "torch":
        raise ValueError(
            f"{model_path} is an ONNX export folder: serve it with --backend onnx or onnx-int8 (or "
            "point torch at the checkpoint it came from)"
        )
    return backend, folder


def load_pipeline(model_path, backend: str = "torch", num_threads: int | None = None):
    """A ``CaMtlClassificationPipeline`` for a checkpoint or export folder on ``backend`` (see the module docstring):
    the same outputs (labels, scores) and the same input errors whichever runs."""
    from transformers import AutoTokenizer

    from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline

    backend, folder = resolve_backend(model_path, backend)
    if folder is None:
        model, tokenizer = load_torch_model(model_path)
    else:
        model = OnnxCaMtlForMultiTask.from_pretrained(folder, quantized=backend == "onnx-int8", num_threads=num_threads)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    pipe = CaMtlClassificationPipeline(model=model, tokenizer=tokenizer)
    pipe.backend = backend
    return pipe


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camtl.serving", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a checkpoint to ONNX (fp32 and int8)")
    export.add_argument("model", help="CA-MTL checkpoint folder or Hub id")
    export.add_argument("output_dir")
    export.add_argument("--no-int8", action="store_true", help="skip the int8 quantised file")
    export.add_argument("--data-dir", default=None, help="GLUE folder: score every variant on its tasks' dev sets")
    export.add_argument("--max-eval-rows", type=int, default=None, help="with --data-dir: rows per task")
    predict = commands.add_parser("predict", help="run the pipeline on texts with a backend")
    predict.add_argument("model", help="checkpoint or export folder")
    predict.add_argument("texts", nargs="+", help="texts (a pair task reads TEXT || TEXT_PAIR)")
    predict.add_argument("--task", required=True)
    predict.add_argument("--backend", default="auto", choices=BACKENDS)
    args = parser.parse_args(argv)
    if args.command == "export":
        folder = export_onnx(
            args.model,
            args.output_dir,
            quantize=not args.no_int8,
            data_dir=args.data_dir,
            max_eval_rows=args.max_eval_rows,
        )
        manifest = read_export_manifest(folder)
        print(
            f"Wrote {folder}: {', '.join(manifest['files'])}; parity {manifest['parity_max_abs_logit_difference']:.2g}"
            f"; auto serves {choose_backend(manifest, torch_available=False)} from this folder"
        )
        return 0
    pipe = load_pipeline(args.model, args.backend)
    inputs = [dict(zip(("text", "text_pair"), (part.strip() for part in text.split("||")))) for text in args.texts]
    for text, result in zip(args.texts, pipe(inputs, task_name=args.task, batch_size=len(inputs))):
        print(json.dumps({"backend": pipe.backend, "text": text, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
