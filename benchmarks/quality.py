"""Quality benchmark: CA-MTL against the baselines a user would pick instead, with the same training budget.

Arms (MiniLM-L6 base, CoLA, SST-2, MRPC, STS-B, RTE, full dev sets from ../shared/data/glue):
  1. single-task     one fine-tuned model per task (the whole encoder trains, no conditioning); the step budget is
                     split evenly over the five tasks;
  2. plain-mtl       one shared encoder and five heads, no conditioning, everything trains, proportional sampling;
  3. camtl           CA-MTL as in the paper (conditional modules, lower half frozen), proportional sampling;
  4. camtl-unc       CA-MTL with MT-Uncertainty sampling, camtl's defaults (a per-task floor of 3 rows in each
                     batch of 32, regression rows borrow classification scores);
  5. camtl-unc-paper CA-MTL with the paper's MT-Uncertainty rule exactly (no floor);
  6. camtl-adapters  CA-MTL's parameter-efficient mode: the whole backbone frozen (proportional sampling, which
                     costs a third of uncertainty's step time on CPU; learning rate 1e-3);
  and, for the converged benchmark's part 3: camtl-unfrozen and camtl-unc-unfrozen (no layer frozen),
  camtl-unc-prop(-unfrozen) (MT-Uncertainty with ``--sampling.allocation proportional``). camtl-unc and
  camtl-unc-paper use the paper's entropy allocation, whatever the recipe's default.

Every arm is one or more ``train.py`` runs (a subprocess each) on the same configuration, seeds and step budget;
the table reports each task's GLUE metric, the average, parameters trained, parameters needed to serve all five
tasks, training examples used and wall time.

    python benchmarks/quality.py --steps 300                                  # every arm, seed 42
    python benchmarks/quality.py --steps 300 --first_seed 43 --append --arms camtl plain-mtl   # more seeds

This is the small, equal-steps budget. The converged budget (passes over each task, a learning-rate sweep per arm,
resumable arms) is `benchmarks/converged.py`, which runs these same arms.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from benchmarks/
    sys.path.insert(0, str(ROOT))
from benchmarks.speed import cpu_name  # noqa: E402

TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
NO_CONDITIONING = (
    "{conditional_alignment: false, conditional_attention: false, conditional_layer_norm: false, "
    "conditional_adapter: false}"
)
#: Every arm states its CA-MTL knobs (``--model.camtl`` replaces the recipe's dict) and its MT-Uncertainty allocation,
#: so that a change of configs/glue.yaml's defaults does not change what an arm measures.
PAPER_FREEZING, UNFROZEN = "{}", "{num_frozen_layers: 0}"
ARMS = {
    "camtl-unc": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        PAPER_FREEZING,
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",
    ],
    "camtl": ["--model.trainable", "paper", "--model.camtl", PAPER_FREEZING, "--sampling.strategy", "proportional"],
    "plain-mtl": ["--model.trainable", "all", "--model.camtl", NO_CONDITIONING, "--sampling.strategy", "proportional"],
    "single-task": ["--model.trainable", "all", "--model.camtl", NO_CONDITIONING, "--sampling.strategy", "uniform"],
    "camtl-adapters": [
        "--model.trainable",
        "adapters",
        "--model.camtl",
        PAPER_FREEZING,
        "--sampling.strategy",
        "proportional",
        "--train.learning_rate",
        "1e-3",
    ],
    "camtl-unc-paper": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        PAPER_FREEZING,
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",
        "--sampling.min_rows_per_task",
        "0",
    ],
    # issue 10 part 3: the paper freezes half of a 12/24-layer encoder; MiniLM has 6, so half leaves 3 to adapt
    "camtl-unfrozen": ["--model.trainable", "paper", "--model.camtl", UNFROZEN, "--sampling.strategy", "proportional"],
    "camtl-unc-unfrozen": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        UNFROZEN,
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",
    ],
    # issue 10 part 3: the entropy picks rows within a task; the task mix is proportional's (camtl/sampling.py)
    "camtl-unc-prop-unfrozen": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        UNFROZEN,
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "proportional",
    ],
    "camtl-unc-prop": [
        "--model.trainable",
        "paper",
        "--model.camtl",
        PAPER_FREEZING,
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "proportional",
    ],
}


def run_train(out_dir: Path, extra: list[str], args, save_every: int = 0) -> dict:
    """One train.py run in a subprocess; returns its results.json.

    A subprocess, not ``camtl.trainer.train`` in this process: each arm starts with fresh memory, threads and
    Accelerate state, its command line is printed as a user would type it, and a crash or Ctrl-C of one arm leaves the
    records of the others on file.

    ``save_every > 0``: resumable, the run continues from its latest checkpoint in ``out_dir`` (a killed benchmark
    loses at most ``save_every`` steps); otherwise any earlier run in ``out_dir`` is overwritten.
    """
    keep = (
        ["--resume_from_checkpoint", "latest", "--train.save_total_limit", "1"]
        if save_every
        else ["--overwrite_output_dir", "true"]
    )
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs" / "glue.yaml"),
        "--output_dir",
        str(out_dir),
        *keep,
        "--data.data_dir",
        str(args.data_dir),
        "--data.max_length",
        str(args.max_length),
        "--train.learning_rate",
        str(args.learning_rate),
        "--train.eval_every",
        "0",
        "--train.save_every",
        str(save_every),
        "--train.report_to",
        "none",
        "--train.final_model",
        "last",
        *extra,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads((out_dir / "results.json").read_text())


def run_arm(arm: str, seed: int, args) -> dict:
    base = ARMS[arm] + ["--train.seed", str(seed)]
    work = Path(args.work_dir) / f"{arm}-seed{seed}"
    start = time.time()
    if arm != "single-task":
        res = run_train(work, base + ["--train.max_steps", str(args.steps)], args)
        tasks = {name: res["tasks"][name] for name in TASKS}
        trained, serve = res["parameters"]["trainable"], res["parameters"]["total"]
        examples = res["examples_trained"]
        fraction = res["data_fraction"]["overall"]
        rows_per_task = {name: res["data_fraction"]["used_rows"][name] for name in TASKS}
    else:
        per_task = max(1, args.steps // len(TASKS))
        tasks, trained, serve, examples, used_rows, all_rows, rows_per_task = {}, 0, 0, 0, 0, 0, {}
        for name in TASKS:
            res = run_train(work / name, base + ["--data.tasks", f"[{name}]", "--train.max_steps", str(per_task)], args)
            tasks[name] = res["tasks"][name]
            trained += res["parameters"]["trainable"]
            serve += res["parameters"]["total"]  # five separate models to serve
            examples += res["examples_trained"]
            used_rows += sum(res["data_fraction"]["used_rows"].values())
            rows_per_task[name] = res["data_fraction"]["used_rows"][name]
            all_rows += sum(res["data_fraction"]["total_rows"].values())
        fraction = used_rows / all_rows
    main_scores = [tasks[name]["main"] for name in TASKS]
    return {
        "arm": arm,
        "seed": seed,
        "tasks": tasks,
        "average": sum(main_scores) / len(main_scores),
        "parameters_trained": trained,
        "parameters_to_serve_all": serve,
        "examples_trained": examples,
        "data_fraction": fraction,
        "rows_trained_per_task": rows_per_task,
        "wall_time_s": round(time.time() - start, 1),
    }


def arm_summary(rows: list[dict]) -> dict:
    """One arm's seeds: mean and spread (sample standard deviation) of each task, the average, the data fraction and
    the wall time; the parameter counts and examples of the first seed."""
    import statistics

    def stat(values):
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    return {
        "tasks": {t: stat([r["tasks"][t]["main"] for r in rows]) for t in TASKS},
        "average": stat([r["average"] for r in rows]),
        "parameters_trained": rows[0]["parameters_trained"],
        "parameters_to_serve_all": rows[0]["parameters_to_serve_all"],
        "examples_trained": rows[0]["examples_trained"],
        "data_fraction": stat([r["data_fraction"] for r in rows]),
        "wall_time_s": stat([r["wall_time_s"] for r in rows]),
    }


def summarise(runs: list[dict]) -> dict:
    """`arm_summary` of every arm, with its number of seeds."""
    table = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        if rows:
            table[arm] = {**arm_summary(rows), "seeds": len(rows)}
    return table


def markdown(table: dict, majority: dict | None = None) -> str:
    head = (
        "| arm | " + " | ".join(TASKS) + " | average | trained params | params to serve 5 tasks | examples | "
        "data used | wall time |"
    )
    lines = [head, "|" + "---|" * (len(TASKS) + 7)]
    for arm, row in table.items():
        cells = [
            f"{100 * row['tasks'][t]['mean']:.1f}"
            + (f" ± {100 * row['tasks'][t]['std']:.1f}" if row["seeds"] > 1 else "")
            for t in TASKS
        ]
        lines.append(
            f"| {arm} | "
            + " | ".join(cells)
            + f" | **{100 * row['average']['mean']:.1f}**"
            + (f" ± {100 * row['average']['std']:.1f}" if row["seeds"] > 1 else "")
            + " | "
            f"{row['parameters_trained'] / 1e6:.2f}M | {row['parameters_to_serve_all'] / 1e6:.1f}M | "
            f"{row['examples_trained']} | {100 * row['data_fraction']['mean']:.1f}% | "
            f"{row['wall_time_s']['mean'] / 60:.1f} min |"
        )
    if majority:
        lines.append(
            "| majority class (reference) | "
            + " | ".join(f"{100 * majority['tasks'][t]:.1f}" for t in TASKS)
            + f" | {100 * majority['average']:.1f} | 0 | | | | |"
        )
    return "\n".join(lines)


def majority_baseline(data_dir: str) -> dict:
    """Each task's dev metric when every row gets the training set's majority class (the mean score for STS-B,
    whose correlations are then undefined: 0). The floor any trained arm should clear."""
    from camtl.metrics import majority_class_from_data
    from camtl.tasks import get_task

    reference = majority_class_from_data([get_task(name) for name in TASKS], data_dir)
    return {"tasks": {name: m["main"] for name, m in reference["tasks"].items()}, "average": reference["average"]}


def write_results(out: Path, runs: list[dict], commands: list[str], args, majority: dict | None = None) -> dict:
    """``out`` (JSON: protocol, summary, every run) and its markdown table beside it (``.md``)."""
    table = summarise(runs)
    out.write_text(
        json.dumps(
            {
                "commands": commands,
                "hardware": f"{cpu_name()}, {os.cpu_count()} cores, CPU only",
                "protocol": {
                    "steps": args.steps,
                    "global_batch": 32,
                    "learning_rate": args.learning_rate,
                    "max_length": args.max_length,
                    "tasks": TASKS,
                    "base_model": "all-MiniLM-L6-v2",
                },
                "majority_class": majority,
                "summary": table,
                "runs": runs,
            },
            indent=1,
        )
    )
    out.with_suffix(".md").write_text("\n".join(f"`{c}`" for c in commands) + "\n\n" + markdown(table, majority) + "\n")
    return table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, default=1, help="seeds first_seed, first_seed + 1, ...")
    parser.add_argument("--first_seed", type=int, default=42)
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the runs already in --out (same protocol) and add these (a run of the same arm "
        "and seed is replaced)",
    )
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of batch 32 per arm")
    parser.add_argument(
        "--learning_rate", type=float, default=1e-4, help="every arm's peak learning rate except camtl-adapters' (1e-3)"
    )
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "benchmarks"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/quality.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    runs, commands = [], [command]
    majority = majority_baseline(args.data_dir)
    if args.append and out.exists():
        previous = json.loads(out.read_text())
        same = {"steps": args.steps, "learning_rate": args.learning_rate, "max_length": args.max_length}
        if any(previous["protocol"][k] != v for k, v in same.items()):
            raise SystemExit(f"--append: {out} was made with another protocol ({previous['protocol']}), not {same}.")
        planned = {(arm, seed) for arm in args.arms for seed in range(args.first_seed, args.first_seed + args.seeds)}
        runs = [r for r in previous["runs"] if (r["arm"], r["seed"]) not in planned]
        commands = previous.get("commands", [previous.get("command")]) + [command]
    table = summarise(runs)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in args.arms:
            runs.append(run_arm(arm, seed, args))
            table = write_results(out, runs, commands, args, majority)
    print(markdown(table, majority))
    return table


if __name__ == "__main__":
    main()
