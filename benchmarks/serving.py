"""Serving five tasks on CPU: the default CA-MTL model on PyTorch, bf16 autocast and ONNX Runtime (fp32, int8),
against the ways a user would otherwise serve them (five BERT classifiers; one base with five PEFT LoRA adapters).

    nice -n 10 python benchmarks/serving.py                     # every section; results appended as each lands
    python benchmarks/serving.py --sections timings memory      # only these (the others kept from the file)
    python benchmarks/serving.py --quick --model TINY --base TINY_BERT --out /tmp/serving.json   # smoke run

Sections (each written to ``benchmarks/results/serving.json`` as soon as it is done; a rerun skips the sections the
file holds unless named in ``--sections``):

- ``timings``: model forward passes on mixed-task batches of real GLUE dev rows (the five dev sets pooled, drawn at
  random, padded per batch), at batch 1 and batch 32, every way interleaved with PyTorch fp32 eager (the baseline)
  in the same run (``benchmarks/speed.py``'s ``interleaved``: order reversed every other repeat); each repeat gives a
  time ratio to the baseline, the median is reported. Ways: CA-MTL on PyTorch fp32 (sdpa attention, as served),
  bf16 autocast, ``torch.compile`` (``--compile``), ONNX Runtime fp32 and int8 (``camtl.serving``); five
  ``BertForSequenceClassification`` (each row sent to its task's model, the batch split by task); one BERT with five
  PEFT LoRA adapters (r 8 on query and value, ``task_type=None``, eval mode) in mixed-adapter batches
  (``adapter_names=``). The five classifiers and the LoRA adapters are built on the base MiniLM (no fine-tuned ones
  exist here): what is measured is speed; their dev scores are not meaningful and are not reported.
- ``pipeline``: requests per second through ``CaMtlClassificationPipeline`` (tokenisation and post-processing
  included) on each backend, batch 1 and 32.
- ``memory``: the peak resident memory (``VmHWM`` of ``/proc/self/status``, the whole process: interpreter, libraries,
  model, a few batches of 32) of each way of serving, each in a fresh process (``ru_maxrss`` would be inherited
  across ``fork``). Five single-model processes are five times one.
- ``scores``: dev metrics of every CA-MTL variant on every task's full dev set (``camtl.trainer.evaluate``), with
  each one's change per task in points of 100 from PyTorch fp32.

One thread everywhere (``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``): the machine is
shared, so ratios measured interleaved are the figures to trust, not absolute throughputs. Table: BENCHMARKS.md
("Serving on CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed import _rss_kib, collate, environment, interleaved, pooled_rows, summarize  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "serving.json"
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
SECTIONS = ("timings", "pipeline", "memory", "scores")
BASELINE = "camtl_torch_fp32"
MEMORY_WAYS = (
    "python_torch_only",
    "camtl_torch_fp32",
    "camtl_onnx_fp32",
    "camtl_onnx_int8",
    "bert_one_task",
    "bert_five_in_one_process",
    "peft_base_five_lora",
)
#: The issue's targets.
TARGET_SPEEDUP, TARGET_MEMORY_RATIO, SCORE_TOLERANCE = 2.5, 0.3, 0.5


# --------------------------------------------------------------------------------------------------------------------
# The ways of serving
# --------------------------------------------------------------------------------------------------------------------
def load_camtl(model_path: str):
    from camtl.serving import load_torch_model

    return load_torch_model(model_path)


def load_onnx(model_path: str, quantized: bool):
    from camtl.serving import OnnxCaMtlForMultiTask, ensure_onnx

    return OnnxCaMtlForMultiTask.from_pretrained(ensure_onnx(model_path), quantized=quantized, num_threads=1)


def num_outputs(task: dict) -> int:
    return len(task["labels"]) if task["kind"] == "classification" else 1


def load_five_berts(base: str, tasks: list[dict]) -> dict:
    """One ``BertForSequenceClassification`` per task on the base weights (heads untrained)."""
    import transformers
    from transformers import BertForSequenceClassification

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    return {
        t["name"]: BertForSequenceClassification.from_pretrained(base, num_labels=num_outputs(t)).eval() for t in tasks
    }


class LoraMultiTask(torch.nn.Module):
    """A BERT with one head per task: what PEFT's LoRA adapters are put on (heads gathered per row by task id)."""

    def __init__(self, base: str, tasks: list[dict]):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(base)
        hidden = self.bert.config.hidden_size
        self.heads = torch.nn.ModuleDict({t["name"]: torch.nn.Linear(hidden, num_outputs(t)) for t in tasks})
        width = max(num_outputs(t) for t in tasks)
        self.register_buffer(
            "column",
            torch.tensor(
                [
                    [sum(num_outputs(u) for u in tasks[:i]) + min(k, num_outputs(t) - 1) for k in range(width)]
                    for i, t in enumerate(tasks)
                ]
            ),
        )

    def forward(self, input_ids, attention_mask, token_type_ids, task_ids):
        pooled = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).pooler_output  # (B, H)
        logits = torch.cat([head(pooled) for head in self.heads.values()], -1)  # (B, sum K)
        return logits.gather(1, self.column[task_ids])  # (B, K)


def load_peft(base: str, tasks: list[dict]):
    """One BERT with five LoRA adapters (one per task, named by it), in eval mode (mixed-adapter batches)."""
    import transformers
    from peft import LoraConfig, get_peft_model

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0, task_type=None)
    model = get_peft_model(LoraMultiTask(base, tasks), config, adapter_name=tasks[0]["name"])
    for task in tasks[1:]:
        model.add_adapter(task["name"], config)
    return model.eval()


def five_bert_forward(models: dict, names: list[str], batch: dict) -> None:
    """Each row to its task's model: the batch split by task, each part trimmed to its own longest row."""
    task_ids = batch["task_ids"]
    for task_id, name in enumerate(names):
        rows = (task_ids == task_id).nonzero().flatten()
        if len(rows) == 0:
            continue
        length = int(batch["attention_mask"][rows].sum(1).max())
        models[name](**{k: batch[k][rows, :length] for k in ("input_ids", "attention_mask", "token_type_ids")})


def peft_forward(model, names: list[str], batch: dict) -> None:
    model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        task_ids=batch["task_ids"],
        adapter_names=[names[i] for i in batch["task_ids"].tolist()],
    )


def camtl_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "task_ids")}


def forward_passes(ways: dict, batches: list[dict], names: list[str]) -> dict:
    """``{way: pass}``: each pass runs every batch once and returns the rows it served."""

    def camtl_pass(model, autocast=False):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                for b in batches:
                    model(**camtl_inputs(b))
            return sum(len(b["task_ids"]) for b in batches)

        return run

    def routed_pass(forward, model):
        def run():
            with torch.inference_mode():
                for b in batches:
                    forward(model, names, b)
            return sum(len(b["task_ids"]) for b in batches)

        return run

    passes = {}
    for name, model in ways.items():
        if name == "bert_five_models":
            passes[name] = routed_pass(five_bert_forward, model)
        elif name == "peft_base_five_lora":
            passes[name] = routed_pass(peft_forward, model)
        else:
            passes[name] = camtl_pass(model, autocast=name == "camtl_torch_bf16_autocast")
    return passes


# --------------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------------
def run_timings(args, tokenizer, model, names) -> dict:
    """Interleaved forward passes at batch 1 and batch 32; ratios to PyTorch fp32."""
    tasks = model.config.tasks
    ways = {
        BASELINE: model,
        "camtl_torch_bf16_autocast": model,
        "camtl_onnx_fp32": load_onnx(args.model, False),
        "camtl_onnx_int8": load_onnx(args.model, True),
        "bert_five_models": load_five_berts(args.base, tasks),
        "peft_base_five_lora": load_peft(args.base, tasks),
    }
    if args.compile:
        compiled = torch.compile(model, dynamic=True)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(**camtl_inputs(collate_rows(tokenizer, pooled_rows(args.glue_dir, 32, seed=9), names)))
        ways["camtl_torch_compile"] = compiled
        compile_s = time.perf_counter() - start
    out = {}
    for batch_size, rows, repeats in ((1, args.rows_batch1, args.repeats), (32, args.rows_batch32, args.repeats)):
        picked = pooled_rows(args.glue_dir, rows, seed=batch_size)
        batches = [collate_rows(tokenizer, picked[i : i + batch_size], names) for i in range(0, rows, batch_size)]
        raw = interleaved(forward_passes(ways, batches, names), repeats=repeats, warmup=1)
        summary = summarize(raw, BASELINE)
        for s in summary["passes"].values():
            s["speedup"] = round(1 / s["time_ratio"], 3)
        summary["rows"], summary["mean_padded_length"] = (
            rows,
            round(statistics.mean(b["input_ids"].shape[1] for b in batches), 1),
        )
        summary["task_rows"] = {n: int(sum((b["task_ids"] == i).sum() for b in batches)) for i, n in enumerate(names)}
        out[f"batch{batch_size}"] = summary
        print(
            f"timings batch {batch_size}: " + ", ".join(f"{k} {v['speedup']}x" for k, v in summary["passes"].items()),
            flush=True,
        )
    if args.compile:
        out["compile_warmup_s"] = round(compile_s, 1)
    return out


def collate_rows(tokenizer, rows: list[dict], names: list[str]) -> dict:
    """``benchmarks/speed.py``'s batch (real rows padded to the longest), task ids in this model's task order."""
    batch = collate(tokenizer, rows, None)
    batch["task_ids"] = torch.tensor([names.index(r["task"]) for r in rows])  # (B,)
    return batch


def run_pipeline(args, names) -> dict:
    """Requests per second through the pipeline on each backend (tokenisation included), interleaved."""
    from camtl.serving import load_pipeline

    pipes = {backend: load_pipeline(args.model, backend, num_threads=1) for backend in ("torch", "onnx", "onnx-int8")}
    rows = pooled_rows(args.glue_dir, args.pipeline_rows, seed=3)
    inputs = [
        {"text": r["text_a"], **({"text_pair": r["text_b"]} if r["text_b"] else {}), "task_name": r["task"]}
        for r in rows
    ]
    out = {}
    for batch_size in (1, 32):
        passes = {
            backend: (lambda p=pipe, b=batch_size: len(p(inputs, batch_size=b))) for backend, pipe in pipes.items()
        }
        summary = summarize(interleaved(passes, repeats=args.pipeline_repeats, warmup=1), "torch")
        out[f"batch{batch_size}"] = {
            backend: {
                "requests_per_s": s["samples_per_s"],
                "speedup": round(1 / s["time_ratio"], 3),
                "time_ratio_min": s["time_ratio_min"],
                "time_ratio_max": s["time_ratio_max"],
            }
            for backend, s in summary["passes"].items()
        }
        print(f"pipeline batch {batch_size}: {out[f'batch{batch_size}']}", flush=True)
    return out


def memory_worker(spec: dict) -> dict:
    """Load one way of serving, run a few mixed batches of 32, report ``VmHWM`` (fresh process: ``--memory-worker``)."""
    torch.set_num_threads(1)
    way, model_path, base = spec["way"], spec["model"], spec["base"]
    if way != "python_torch_only":
        from transformers import AutoTokenizer

        from modeling_camtl.configuration_camtl import CaMtlConfig

        config = CaMtlConfig.from_pretrained(model_path)
        tasks, names = config.tasks, config.task_names
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)
        rows = pooled_rows(Path(spec["glue_dir"]), 32 * spec["batches"], seed=5)
        batches = [collate_rows(tokenizer, rows[i : i + 32], names) for i in range(0, len(rows), 32)]
        if way == "camtl_torch_fp32":
            model, _ = load_camtl(model_path)
            run = lambda b: model(**camtl_inputs(b))  # noqa: E731
        elif way.startswith("camtl_onnx"):
            runner = load_onnx(model_path, way.endswith("int8"))
            run = lambda b: runner(**camtl_inputs(b))  # noqa: E731
        elif way == "bert_one_task":  # one task's classifier serving every row
            bert = load_five_berts(base, tasks[:1])
            run = lambda b: five_bert_forward(bert, names, {**b, "task_ids": torch.zeros_like(b["task_ids"])})  # noqa: E731
        elif way == "bert_five_in_one_process":
            berts = load_five_berts(base, tasks)
            run = lambda b: five_bert_forward(berts, names, b)  # noqa: E731
        else:
            peft_model = load_peft(base, tasks)
            run = lambda b: peft_forward(peft_model, names, b)  # noqa: E731
        with torch.inference_mode():
            for b in batches:
                run(b)
    return {"way": way, "peak_mb": round(_rss_kib("VmHWM") / 1024, 1), "rss_mb": round(_rss_kib("VmRSS") / 1024, 1)}


def run_memory(args) -> dict:
    out = {}
    for way in MEMORY_WAYS:
        spec = {
            "way": way,
            "model": args.model,
            "base": args.base,
            "glue_dir": str(args.glue_dir),
            "batches": args.memory_batches,
        }
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory worker {way} failed:\n{proc.stderr[-3000:]}")
        out[way] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"memory {way}: {out[way]}", flush=True)
    one = out["bert_one_task"]["peak_mb"]
    camtl = out["camtl_torch_fp32"]["peak_mb"]
    out["ratios"] = {
        "camtl_torch_vs_five_processes": round(camtl / (5 * one), 3),
        "camtl_torch_vs_five_models_one_process": round(camtl / out["bert_five_in_one_process"]["peak_mb"], 3),
        "camtl_onnx_int8_vs_five_processes": round(out["camtl_onnx_int8"]["peak_mb"] / (5 * one), 3),
        "camtl_onnx_int8_vs_five_models_one_process": round(
            out["camtl_onnx_int8"]["peak_mb"] / out["bert_five_in_one_process"]["peak_mb"], 3
        ),
        "camtl_torch_vs_peft": round(camtl / out["peft_base_five_lora"]["peak_mb"], 3),
    }
    return out


def run_scores(args, tokenizer, model) -> dict:
    """Full dev sets of every task for each CA-MTL variant; changes per task in points of 100 from PyTorch fp32."""
    from camtl.serving import evaluate_dev

    variants = {
        BASELINE: (model, "no"),
        "camtl_torch_bf16_autocast": (model, "bf16"),
        "camtl_onnx_fp32": (load_onnx(args.model, False), "no"),
        "camtl_onnx_int8": (load_onnx(args.model, True), "no"),
    }
    out = {}
    for name, (runner, precision) in variants.items():
        start = time.perf_counter()
        out[name] = evaluate_dev(runner, tokenizer, str(args.glue_dir), args.max_eval_rows, mixed_precision=precision)
        out[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"scores {name}: {json.dumps(out[name]['tasks'])}", flush=True)
    reference = out[BASELINE]["tasks"]
    for result in out.values():
        result["delta_points"] = {
            t: round(100 * (m["main"] - reference[t]["main"]), 3) for t, m in result["tasks"].items()
        }
    return out


# --------------------------------------------------------------------------------------------------------------------
# Results file
# --------------------------------------------------------------------------------------------------------------------
def read_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_results(path: Path, results: dict) -> None:
    results["table"] = markdown_table(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def markdown_table(results: dict) -> str:
    lines = []
    timings = results.get("timings", {})
    if timings:
        ways = list(timings["batch32"]["passes"])
        lines += ["| way of serving five tasks | batch 1: speed vs PyTorch fp32 | batch 32 |", "|---|---:|---:|"]
        for way in ways:
            cells = [
                f"{timings[b]['passes'][way]['speedup']:.2f}x" if way in timings.get(b, {}).get("passes", {}) else ""
                for b in ("batch1", "batch32")
            ]
            lines.append(f"| {way} | " + " | ".join(cells) + " |")
    pipeline = results.get("pipeline", {})
    if pipeline:
        lines += ["", "| pipeline backend | requests/s, batch 1 | batch 32 |", "|---|---:|---:|"]
        for backend in pipeline["batch1"]:
            lines.append(
                f"| {backend} | "
                + " | ".join(
                    f"{pipeline[b][backend]['requests_per_s']:.1f} ({pipeline[b][backend]['speedup']:.2f}x)"
                    for b in ("batch1", "batch32")
                )
                + " |"
            )
    memory = results.get("memory", {})
    if memory:
        lines += ["", "| way of serving | peak memory (VmHWM), MB |", "|---|---:|"]
        lines += [f"| {way} | {m['peak_mb']:.0f} |" for way, m in memory.items() if way != "ratios"]
        lines += [f"| five processes of one BERT each | {5 * memory['bert_one_task']['peak_mb']:.0f} |"]
    scores = results.get("scores", {})
    if scores:
        tasks = list(scores[BASELINE]["tasks"])
        lines += ["", "| variant | " + " | ".join(tasks) + " | average |", "|---|" + "---:|" * (len(tasks) + 1)]
        for name, s in scores.items():
            cells = [
                f"{100 * s['tasks'][t]['main']:.2f}" + (f" ({s['delta_points'][t]:+.2f})" if name != BASELINE else "")
                for t in tasks
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * s['average']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="CA-MTL checkpoint (default: the project's default model)")
    parser.add_argument(
        "--base",
        default=None,
        help="BERT base of the five classifiers and of PEFT (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument("--glue-dir", type=Path, default=GLUE_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=None,
        help="run these sections again (default: every section the results file lacks)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rows-batch1", type=int, default=32, help="rows timed one by one per repeat")
    parser.add_argument("--rows-batch32", type=int, default=128, help="rows timed in batches of 32 per repeat")
    parser.add_argument("--pipeline-rows", type=int, default=64)
    parser.add_argument("--pipeline-repeats", type=int, default=5)
    parser.add_argument("--memory-batches", type=int, default=3)
    parser.add_argument("--max-eval-rows", type=int, default=None, help="dev rows per task (default: all)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (dynamic shapes)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, few rows, 16 dev rows per task")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return None
    torch.set_num_threads(1)
    from camtl.default_model import bundled_base, ensure_default_model

    args.model = str(args.model or ensure_default_model())
    args.base = str(args.base or bundled_base())
    if args.quick:
        args.repeats, args.rows_batch1, args.rows_batch32, args.pipeline_rows, args.pipeline_repeats = 2, 4, 64, 8, 2
        args.memory_batches, args.max_eval_rows = 1, args.max_eval_rows or 16
    results = read_results(args.out)
    todo = args.sections or [s for s in SECTIONS if s not in results]
    results.setdefault("environment", {})[" ".join(todo)] = environment("cpu")
    results["settings"] = {
        "model": os.path.relpath(args.model, ROOT)
        if args.model.startswith(str(ROOT))
        else "default model"
        if "default-model-" in args.model
        else args.model,
        "base": "all-MiniLM-L6-v2 (bundled)" if args.base == bundled_base() else args.base,
        "threads": 1,
        "repeats": args.repeats,
        "rows_batch1": args.rows_batch1,
        "rows_batch32": args.rows_batch32,
        "quick": args.quick,
        "five_classifiers_and_lora": "built on the base weights (no fine-tunes here): speed only",
    }
    model, tokenizer = load_camtl(args.model)
    names = model.config.task_names
    for section in todo:
        if section == "timings":
            results["timings"] = run_timings(args, tokenizer, model, names)
        elif section == "pipeline":
            results["pipeline"] = run_pipeline(args, names)
        elif section == "memory":
            results["memory"] = run_memory(args)
        else:
            results["scores"] = run_scores(args, tokenizer, model)
        write_results(args.out, results)
    print(results.get("table", markdown_table(results)))
    return results


if __name__ == "__main__":
    main()
