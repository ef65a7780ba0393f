"""What a training step costs under each task-sampling setting, measured side by side in one process.

Every setting is a real `train.py` run (GLUE-5 training files, MiniLM-L6, global batch 32, the paper's freezing, the
run's mixed precision: bf16 where the CPU has it), built once; the timed steps of the settings are interleaved in
rounds, so a slow spell of the machine hits every setting alike. A step is everything `train.py` does for one
optimizer update: drawing (and for MT-Uncertainty scoring) the candidates, the forward and backward passes, AdamW.

Settings:
  proportional        one task per batch, probability proportional to its size (the cheap reference);
  balanced            the same mixed-task batches MT-Uncertainty trains on (every task in every batch), unscored:
                      the cost of the task mix alone, without the scoring;
  unc-paper-pool      MT-Uncertainty with the paper's candidate pool (32 rows of every task scored for 32 trained);
  unc-pool-16/-8      MT-Uncertainty with 16 / 8 candidates per task;
  unc-prop(-48)       MT-Uncertainty with ``--sampling.allocation proportional``: one task per batch, drawn as
                      proportional draws it, its 32 most uncertain of 64 (48) candidates of that task.
(The ``-grouped`` settings of benchmarks/results/group_by_length.json measured ``--train.group_by_length``, removed
since: BENCHMARKS.md.)

    python benchmarks/sampling_cost.py                      # 3 rounds of 15 steps per setting
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.speed import cpu_name  # noqa: E402
from camtl import trainer  # noqa: E402
from camtl.config import parse_config  # noqa: E402

UNC = ["--sampling.strategy", "uncertainty", "--sampling.allocation", "entropy"]  # the paper's task mix
SETTINGS = {
    "proportional": ["--sampling.strategy", "proportional"],
    "balanced": [*UNC, "--sampling.warmup_steps", "1000000"],
    "unc-paper-pool": UNC,
    "unc-pool-16": [*UNC, "--sampling.candidates_per_task", "16"],
    "unc-pool-8": [*UNC, "--sampling.candidates_per_task", "8"],
    "unc-prop": ["--sampling.strategy", "uncertainty", "--sampling.allocation", "proportional"],
    "unc-prop-48": [
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "proportional",
        "--sampling.candidates_per_task",
        "48",
    ],
}


def build(name: str, extra: list[str], args) -> tuple[trainer.Run, trainer.LoopState]:
    cfg = parse_config(
        [
            "--config",
            str(ROOT / "configs" / "glue.yaml"),
            "--data.data_dir",
            args.data_dir,
            "--output_dir",
            str(Path(args.work_dir) / name),
            "--overwrite_output_dir",
            "true",
            "--train.max_steps",
            "100000",
            "--train.report_to",
            "none",
            "--train.mixed_precision",
            args.mixed_precision,
            "--train.learning_rate",
            "1e-4",
            "--model.camtl",
            "{}",  # the paper's freezing, whatever glue.yaml's recipe says
            *extra,
        ]
    )
    run = trainer.prepare(trainer.setup(cfg))
    run.model.train()
    state, _ = trainer._start_state(run)
    return run, state


def _ratio(value: float | None) -> str:
    """A ratio cell of the table: '-' where its reference setting was not measured."""
    return "-" if value is None else f"{value:.2f}"


def timed_steps(run: trainer.Run, state: trainer.LoopState, steps: int) -> dict:
    real = padded = 0
    original_next = run.batches.next

    def counting_next(scorer=None):
        nonlocal real, padded
        batch = original_next(scorer)
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        return batch

    run.batches.next = counting_next
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(run, state)
    seconds = (time.perf_counter() - start) / steps
    run.batches.next = original_next
    return {"s_per_step": seconds, "real_tokens": real / steps, "padded_tokens": padded / steps}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per setting per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per setting first")
    parser.add_argument("--mixed_precision", default="auto")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "sampling_cost"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling_cost.json"))
    args = parser.parse_args(argv)
    command = "python benchmarks/sampling_cost.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    runs = {name: build(name, SETTINGS[name], args) for name in args.settings}
    for run, state in runs.values():
        timed_steps(run, state, args.warmup)
    rounds = []
    for _ in range(args.rounds):
        rounds.append({name: timed_steps(run, state, args.steps) for name, (run, state) in runs.items()})
    summary = {}
    for name in runs:
        per_round = [r[name] for r in rounds]
        summary[name] = {
            "s_per_step_median": statistics.median(r["s_per_step"] for r in per_round),
            "ratio_to_proportional": statistics.median(
                r[name]["s_per_step"] / r["proportional"]["s_per_step"] for r in rounds
            )
            if "proportional" in runs
            else None,
            "ratio_to_balanced": statistics.median(r[name]["s_per_step"] / r["balanced"]["s_per_step"] for r in rounds)
            if "balanced" in runs
            else None,
            "real_tokens_per_step": statistics.fmean(r["real_tokens"] for r in per_round),
            "padded_tokens_per_step": statistics.fmean(r["padded_tokens"] for r in per_round),
        }
    precision = next(iter(runs.values()))[0].cfg.train.mixed_precision
    result = {
        "command": command,
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores, CPU only",
        "mixed_precision": precision,
        "steps_per_round": args.steps,
        "rounds": rounds,
        "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    lines = [
        f"`{command}` ({result['hardware']}, {precision})",
        "",
        "| setting | s/step (median) | x proportional | x balanced | real tokens/step | padded tokens/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['s_per_step_median']:.3f} | {_ratio(row['ratio_to_proportional'])} | "
            f"{_ratio(row['ratio_to_balanced'])} | {row['real_tokens_per_step']:.0f} | "
            f"{row['padded_tokens_per_step']:.0f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
