"""Converged quality benchmark: CA-MTL against single-task fine-tuning at the budget single-task fine-tuning needs.

The arms are `benchmarks/quality.py`'s (single-task, plain-mtl, camtl, camtl-unc, camtl-unc-paper, camtl-adapters).
The budget is counted in passes over each task's training rows, as optimizer steps of batch 32, the same for every
arm:

  converged  3 passes over CoLA, MRPC, STS-B and RTE and 1 over SST-2, whose training rows are capped at
             ``--sst2_rows`` (16,000 of 67,349) for every arm alike: 2,419 steps. Single-task: each task's own
             steps (cola 802, sst2 500, mrpc 344, stsb 539, rte 234); a multi-task arm: their sum;
  paper      the paper's 5 epochs over the full files (13,724 steps): for a GPU.

Each arm is swept over learning rates on the first seed and the rate is chosen on the dev average (single-task:
per task, on that task's metric: the strongest baseline we can give it); more seeds then run at the chosen rate.
Every (arm, learning rate, seed) is one record in ``--out``, written when it finishes; a record already there is
not run again, and a run killed midway resumes from its last checkpoint (every ``--save_every`` steps): an
interrupted benchmark loses at most a few minutes. Dev metrics of the last weights (no best-checkpoint picking).

    python benchmarks/converged.py --arms single-task camtl-unc --lrs 5e-5 1e-4 2e-4      # the sweep, seed 42
    python benchmarks/converged.py --arms single-task camtl-unc --lrs chosen --seeds 43 44  # more seeds
    python benchmarks/converged.py --budget paper --arms camtl-unc single-task --lrs 2e-5 5e-5  # GPU, paper budget
    python benchmarks/converged.py --arms abl-authors-arch abl-authors-all abl-no-attention abl-no-layer-norm \
        abl-no-alignment abl-no-adapter --lrs 1e-4                                          # issue 11's ablation
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.quality import ARMS as QUALITY_ARMS  # noqa: E402
from benchmarks.quality import TASKS, arm_summary, majority_baseline, run_train  # noqa: E402
from benchmarks.speed import cpu_name  # noqa: E402

#: Issue 11's ablation, against ``camtl-unc-prop-unfrozen`` (configs/glue.yaml's recipe, "ours"): the authors'
#: architecture (``preset: authors``, with their freezing of the lower half) with our sampling, then with their
#: MT-Uncertainty too (entropy allocation, candidates scored in train mode, STS-B borrowing SST-2's scores, no floor),
#: and ours without each conditional module in turn, then without all four. README: "Departures from the paper and
#: the authors' code".
_UNC_PROP = [
    "--model.trainable",
    "paper",
    "--sampling.strategy",
    "uncertainty",
    "--sampling.allocation",
    "proportional",
]
_MODULES = ("attention", "layer_norm", "alignment", "adapter")


def _modules_off(*names: str) -> list[str]:
    """Ours (configs/glue.yaml's recipe: nothing frozen but the embeddings) with the named conditional modules off."""
    off = ", ".join(f"conditional_{name}: false" for name in names)
    return _UNC_PROP + ["--model.camtl", f"{{num_frozen_layers: 0, {off}}}"]


ABLATION_ARMS = {
    "abl-authors-arch": _UNC_PROP + ["--model.camtl", "{preset: authors}"],
    "abl-authors-all": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        "{preset: authors}",
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",
        "--sampling.score_mode",
        "train",
        "--sampling.regression_score_source",
        "sst2",
        "--sampling.min_rows_per_task",
        "0",
    ],
    **{f"abl-no-{name.replace('_', '-')}": _modules_off(name) for name in _MODULES},
    # all four off: plain MTL with our MT-Uncertainty and freezing (what the conditional modules buy together)
    "abl-no-modules": _modules_off(*_MODULES),
}
#: Issue 10's fixes, against ``camtl-unc-prop-unfrozen``: CA-MTL's modules and the heads start at zero or at random,
#: the encoder from pretrained weights; ``-newlr5`` trains the new parameters at 5x the encoder's rate.
FIX_ARMS = {
    "camtl-unc-prop-unfrozen-newlr5": QUALITY_ARMS["camtl-unc-prop-unfrozen"] + ["--train.new_parameters_lr_scale", "5"]
}
#: Issue 27's optimisation toolbox, against ``camtl-unc-prop-unfrozen`` (the shipped recipe, equal weighting): each
#: loss weighting on the recipe; the mixed sampler alone (every task in every batch: the aggregators' control); each
#: gradient aggregator on mixed batches over the shared parameters. DWA's period: 100 batches (one epoch would be
#: 1,141 of the 2,419 steps). `benchmarks/optimisation.py converged` runs them.
_RECIPE = QUALITY_ARMS["camtl-unc-prop-unfrozen"]
OPTIMISATION_ARMS = {
    "opt-uncertainty": _RECIPE + ["--train.loss_weighting", "uncertainty"],
    "opt-dwa": _RECIPE + ["--train.loss_weighting", "dwa", "--train.dwa_period", "100"],
    "opt-random": _RECIPE + ["--train.loss_weighting", "random"],
    "opt-mixed": _RECIPE + ["--sampling.strategy", "mixed"],
    **{
        f"opt-{name.replace('_', '-')}": _RECIPE
        + ["--sampling.strategy", "mixed", "--train.gradient_aggregation", name]
        for name in ("pcgrad", "cagrad", "upgrad", "mgda", "imtl_g")
    },
}
ARMS = {**QUALITY_ARMS, **FIX_ARMS, **ABLATION_ARMS, **OPTIMISATION_ARMS}
PASSES = {"converged": {"cola": 3, "sst2": 1, "mrpc": 3, "stsb": 3, "rte": 3}, "paper": dict.fromkeys(TASKS, 5)}
BATCH = 32
#: learning rates swept when --lrs is not given: fine-tuning rates for arms whose whole encoder trains, higher ones
#: for the arms whose new modules start at zero with half (or all) of the encoder frozen.
DEFAULT_LRS = {
    "single-task": [5e-5, 1e-4, 2e-4],
    "plain-mtl": [5e-5, 1e-4, 2e-4],
    "camtl": [1e-4, 2e-4, 5e-4],
    "camtl-unc": [1e-4, 2e-4, 5e-4],
    "camtl-unc-paper": [1e-4, 2e-4, 5e-4],
    "camtl-adapters": [1e-3, 3e-3],
    "camtl-unfrozen": [1e-4, 2e-4],
    "camtl-unc-unfrozen": [1e-4, 2e-4],
    "camtl-unc-prop-unfrozen": [5e-5, 1e-4, 2e-4],
    "camtl-unc-prop": [1e-4, 2e-4],
    "camtl-unc-prop-unfrozen-newlr5": [1e-4],
    **{arm: [1e-4] for arm in ABLATION_ARMS},  # the ablation: at the rate chosen for ours
    **{arm: [1e-4] for arm in OPTIMISATION_ARMS},
}  # issue 27: at the shipped recipe's rate


def train_rows(data_dir: str, sst2_rows: int | None) -> dict[str, int]:
    """Training rows of each task (SST-2 capped at ``sst2_rows``)."""
    from camtl.tasks import get_task, load_split

    rows = {name: len(load_split(get_task(name), "train", data_dir)) for name in TASKS}
    if sst2_rows:
        rows["sst2"] = min(rows["sst2"], sst2_rows)
    return rows


def task_steps(rows: dict[str, int], passes: dict[str, float]) -> dict[str, int]:
    """Optimizer steps of batch 32 that ``passes`` over each task's rows take."""
    return {name: math.ceil(rows[name] * passes[name] / BATCH) for name in TASKS}


def run_key(record: dict) -> tuple:
    return record["arm"], record["lr"], record["seed"], record.get("task")


def run_one(arm: str, lr: float, seed: int, task: str | None, steps: int, args) -> dict:
    """One train.py run: a multi-task arm on the five tasks, or one task of the single-task arm."""
    name = f"{arm}-lr{lr:g}-seed{seed}" + (f"-{task}" if task else "")
    extra = ARMS[arm] + ["--train.seed", str(seed), "--train.learning_rate", str(lr), "--train.max_steps", str(steps)]
    if args.sst2_rows:
        extra += ["--data.max_train_rows", str(args.sst2_rows)]  # only SST-2 has more rows
    if task:
        extra += ["--data.tasks", f"[{task}]"]
    start = time.time()
    res = run_train(Path(args.work_dir) / args.budget / name, extra, args, save_every=args.save_every)
    names = [task] if task else TASKS
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "task": task,
        "steps": res["steps"],
        "tasks": {t: res["tasks"][t] for t in names},
        "average": statistics.fmean(res["tasks"][t]["main"] for t in names),
        "parameters_trained": res["parameters"]["trainable"],
        "parameters_total": res["parameters"]["total"],
        "examples_trained": res["examples_trained"],
        "used_rows": {t: res["data_fraction"]["used_rows"][t] for t in names},
        "total_rows": {t: res["data_fraction"]["total_rows"][t] for t in names},
        "train_wall_time_s": res["wall_time_s"],
        "wall_time_s": round(time.time() - start, 1),
        "mixed_precision": res["mixed_precision"],
        "sampling": res["sampling"],
        "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
    }


def chosen_lrs(runs: list[dict], arm: str, first_seed: int) -> dict[str | None, float]:
    """The learning rate of ``arm`` with the best dev score on ``first_seed`` (single-task: per task)."""
    swept = [r for r in runs if r["arm"] == arm and r["seed"] == first_seed]
    best: dict[str | None, tuple[float, float]] = {}
    for r in swept:
        if r["task"] not in best or r["average"] > best[r["task"]][0]:
            best[r["task"]] = (r["average"], r["lr"])
    return {task: lr for task, (_, lr) in best.items()}


def arm_seeds(runs: list[dict], arm: str, lrs: dict[str | None, float]) -> list[dict]:
    """Each seed's whole-arm result at the chosen rate(s): single-task runs are joined into one five-task result."""
    by_seed: dict[int, list[dict]] = {}
    for r in runs:
        if r["arm"] == arm and lrs.get(r["task"]) == r["lr"]:
            by_seed.setdefault(r["seed"], []).append(r)
    out = []
    for seed, parts in sorted(by_seed.items()):
        tasks = {t: m for p in parts for t, m in p["tasks"].items()}
        if set(tasks) != set(TASKS):
            continue  # a single-task seed not finished for every task
        used = {t: n for p in parts for t, n in p["used_rows"].items()}
        total = {t: n for p in parts for t, n in p["total_rows"].items()}
        out.append(
            {
                "seed": seed,
                "tasks": tasks,
                "average": statistics.fmean(tasks[t]["main"] for t in TASKS),
                "parameters_trained": sum(p["parameters_trained"] for p in parts),
                "parameters_to_serve_all": sum(p["parameters_total"] for p in parts),
                "examples_trained": sum(p["examples_trained"] for p in parts),
                "data_fraction": sum(used.values()) / sum(total.values()),
                "wall_time_s": sum(run_wall(p) for p in parts),
            }
        )
    return out


def run_wall(run: dict) -> float:
    """A run's wall time: its training time summed over resumes (train.py's ``wall_time_s``) when larger than this
    script's clock, which only saw the last resume."""
    return max(run["wall_time_s"], run.get("train_wall_time_s") or 0.0)


def summarise(runs: list[dict], first_seed: int) -> dict:
    """Each arm at its chosen rate(s) (key: the arm), and at every other single rate that ran on more than one seed
    (key: ``"<arm> @ <lr>"``): a rate chosen on one seed's dev scores can be that seed's luck, and the other rates'
    spread over seeds shows it."""
    table = {}
    for arm in ARMS:
        if not any(r["arm"] == arm for r in runs):
            continue
        lrs = chosen_lrs(runs, arm, first_seed)
        seeds = arm_seeds(runs, arm, lrs)
        if seeds:
            table[arm] = {"lr": lrs, "seeds": [s["seed"] for s in seeds], **arm_summary(seeds)}
        for lr in sorted({r["lr"] for r in runs if r["arm"] == arm}):
            fixed = {task: lr for task in lrs}
            if fixed == lrs:
                continue
            seeds = arm_seeds(runs, arm, fixed)
            if len(seeds) > 1:
                table[f"{arm} @ {lr:g}"] = {"lr": fixed, "seeds": [s["seed"] for s in seeds], **arm_summary(seeds)}
    return table


def _pm(stat: dict, n: int, scale: float = 100.0) -> str:
    return f"{scale * stat['mean']:.1f}" + (f" ± {scale * stat['std']:.1f}" if n > 1 else "")


def markdown(table: dict, runs: list[dict], first_seed: int, majority: dict | None = None) -> str:
    lines = [
        "| arm | lr | seeds | " + " | ".join(TASKS) + " | average | trained params | params to serve 5 tasks | "
        "data used | wall time |",
        "|" + "---|" * (len(TASKS) + 8),
    ]
    for arm, row in table.items():
        n = len(row["seeds"])
        lr = ", ".join(f"{t}: {v:g}" for t, v in row["lr"].items()) if None not in row["lr"] else f"{row['lr'][None]:g}"
        lines.append(
            f"| {arm} | {lr} | {n} | "
            + " | ".join(_pm(row["tasks"][t], n) for t in TASKS)
            + f" | **{_pm(row['average'], n)}** | {row['parameters_trained'] / 1e6:.2f}M | "
            f"{row['parameters_to_serve_all'] / 1e6:.1f}M | {_pm(row['data_fraction'], n)}% | "
            f"{row['wall_time_s']['mean'] / 60:.0f} min |"
        )
    if majority:
        lines.append(
            "| majority class | | | "
            + " | ".join(f"{100 * majority['tasks'][t]:.1f}" for t in TASKS)
            + f" | {100 * majority['average']:.1f} | | | | |"
        )
    lines += [
        "",
        f"Learning-rate sweep (seed {first_seed}; dev average, single-task: each task's metric):",
        "",
        "| arm | lr | " + " | ".join(TASKS) + " | average | wall time |",
        "|" + "---|" * (len(TASKS) + 4),
    ]
    swept = sorted((r for r in runs if r["seed"] == first_seed), key=lambda r: (list(ARMS).index(r["arm"]), r["lr"]))
    for arm in ARMS:
        for lr in sorted({r["lr"] for r in swept if r["arm"] == arm}):
            parts = [r for r in swept if r["arm"] == arm and r["lr"] == lr]
            tasks = {t: m["main"] for p in parts for t, m in p["tasks"].items()}
            cells = [f"{100 * tasks[t]:.1f}" if t in tasks else "" for t in TASKS]
            avg = f"{100 * statistics.fmean(tasks.values()):.1f}" if len(tasks) == len(TASKS) else "(partial)"
            wall = sum(run_wall(p) for p in parts) / 60
            lines.append(f"| {arm} | {lr:g} | " + " | ".join(cells) + f" | {avg} | {wall:.0f} min |")
    return "\n".join(lines)


def merge_on_disk(out: Path, runs: list[dict], commands: list[str]) -> None:
    """Add to ``runs`` and ``commands`` (in place) what another process wrote to ``out`` since this one read it, so
    two queues can fill the same results file (each runs different arms)."""
    if not out.exists():
        return
    disk = json.loads(out.read_text())
    mine = {run_key(r) for r in runs}
    runs.extend(r for r in disk["runs"] if run_key(r) not in mine)
    commands[:] = disk["commands"] + [c for c in commands if c not in disk["commands"]]


def write_results(
    out: Path, runs: list[dict], commands: list[str], protocol: dict, first_seed: int, majority: dict | None
) -> dict:
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        merge_on_disk(out, runs, commands)
        return _write_results(out, runs, commands, protocol, first_seed, majority)


def _write_results(
    out: Path, runs: list[dict], commands: list[str], protocol: dict, first_seed: int, majority: dict | None
) -> dict:
    table = summarise(runs, first_seed)
    out.write_text(
        json.dumps(
            {
                "commands": commands,
                "hardware": f"{cpu_name()}, {os.cpu_count()} cores",
                "protocol": protocol,
                "majority_class": majority,
                "summary": table,
                "runs": runs,
            },
            indent=1,
        )
    )
    out.with_suffix(".md").write_text(
        "\n".join(f"`{c}`" for c in commands) + "\n\n" + markdown(table, runs, first_seed, majority) + "\n"
    )
    return table


def planned_runs(args, runs: list[dict], steps: dict[str, int]) -> list[tuple[str, float, int, str | None, int]]:
    """(arm, lr, seed, task, steps) of every run asked for; ``--lrs chosen`` takes each arm's chosen rate(s)."""
    plan = []
    for seed in args.seeds:
        for arm in args.arms:
            if args.lrs == ["chosen"]:
                chosen = chosen_lrs(runs, arm, args.seeds_first)
                if not chosen:
                    raise SystemExit(f"--lrs chosen: {arm} has no sweep on seed {args.seeds_first} in {args.out} yet.")
                per_task = [(lr, task) for task, lr in chosen.items()]
            else:
                lrs = [float(x) for x in args.lrs] if args.lrs else DEFAULT_LRS[arm]
                per_task = [(lr, task) for lr in lrs for task in (TASKS if arm == "single-task" else [None])]
            for lr, task in per_task:
                plan.append((arm, lr, seed, task, steps[task] if task else sum(steps.values())))
    return plan


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=["single-task", "camtl-unc"], choices=list(ARMS))
    parser.add_argument(
        "--lrs",
        nargs="+",
        default=None,
        help="learning rates to run, or 'chosen' (each arm's best on the first seed); default: "
        "each arm's sweep (DEFAULT_LRS)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--seeds_first", type=int, default=42, help="the seed the learning rates are chosen on")
    parser.add_argument("--budget", choices=list(PASSES), default="converged")
    parser.add_argument(
        "--sst2_rows",
        type=int,
        default=None,
        help="cap on SST-2's training rows for every arm (default: 16000 for converged, none for paper)",
    )
    parser.add_argument("--save_every", type=int, default=200, help="checkpoint every N steps (resumable arms)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "converged"))
    parser.add_argument("--out", default=None, help="default: benchmarks/results/<budget>.json")
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite the summary and the markdown table of --out from its runs (no run)",
    )
    args = parser.parse_args(argv)
    if args.sst2_rows is None:
        args.sst2_rows = 16000 if args.budget == "converged" else 0
    args.learning_rate = DEFAULT_LRS["single-task"][0]  # run_train's default; every run passes its own rate
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{args.budget}.json")
    args.out = str(out)
    rows = train_rows(args.data_dir, args.sst2_rows)
    steps = task_steps(rows, PASSES[args.budget])
    protocol = {
        "budget": args.budget,
        "passes": PASSES[args.budget],
        "train_rows": rows,
        "steps": steps,
        "multi_task_steps": sum(steps.values()),
        "global_batch": BATCH,
        "max_length": args.max_length,
        "sst2_rows": args.sst2_rows,
        "tasks": TASKS,
        "base_model": "all-MiniLM-L6-v2",
        "evaluated": "last weights, full dev sets",
    }
    command = "python benchmarks/converged.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    runs, commands, previous = [], [], {}
    if out.exists():
        previous = json.loads(out.read_text())
        if previous["protocol"] != protocol:
            raise SystemExit(f"{out} was made with another protocol:\n{previous['protocol']}\nnot\n{protocol}")
        runs, commands = previous["runs"], previous["commands"]
    if args.report:
        if not runs:
            raise SystemExit(f"--report: {out} holds no runs.")
        table = write_results(out, runs, commands, protocol, args.seeds_first, previous["majority_class"])
        print(markdown(table, runs, args.seeds_first, previous["majority_class"]))
        return table
    commands.append(command)
    majority = majority_baseline(args.data_dir)
    done = {run_key(r) for r in runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    table = write_results(out, runs, commands, protocol, args.seeds_first, majority)
    for arm, lr, seed, task, n_steps in planned_runs(args, runs, steps):
        if (arm, lr, seed, task) in done:
            continue
        runs.append(run_one(arm, lr, seed, task, n_steps, args))
        table = write_results(out, runs, commands, protocol, args.seeds_first, majority)
    print(markdown(table, runs, args.seeds_first, majority))
    return table


if __name__ == "__main__":
    main()
