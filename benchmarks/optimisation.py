"""The optimisation toolbox's benchmark (issue 27): each loss weighting and gradient aggregation against the shipped
recipe (configs/glue.yaml: MT-Uncertainty with proportional allocation, equal weighting, no aggregation).

``step_time``: the time of one optimizer step of each method as a ratio to the default step, measured side by side
in one process: every method's run is built once over the same GLUE-5 rows (SST-2 capped as the converged protocol
caps it), they share one model and one AdamW (the optimiser's cost is the same for every method; uncertainty
weighting has its own, for its log-variances), and the steps are interleaved round after round, the order rotated
each round. Each round's ratio ``t_method / t_default`` is paired (the machine is loaded and noisy: a slow round slows
both); the median over the rounds is reported, with the ratio to the mixed sampler without aggregation (the
aggregators' own cost, without the change of sampler). Appended to ``--out`` as one record.

``converged``: each method's GLUE-5 run at the converged budget (`benchmarks/converged.py`'s protocol and results
file, where the default recipe's runs already are), resumable and appendable as that script is: its
``OPTIMISATION_ARMS``.

    python benchmarks/optimisation.py step_time --rounds 8                    # about 10 minutes on 2 CPU cores
    python benchmarks/optimisation.py converged --methods uncertainty pcgrad --seeds 42   # hours a run on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: method -> its train.py flags on top of the shipped recipe (`benchmarks.converged.OPTIMISATION_ARMS` without the
#: recipe's own flags); "default" is the recipe itself.
METHODS = {
    "default": [],
    "uncertainty": ["--train.loss_weighting", "uncertainty"],
    "dwa": ["--train.loss_weighting", "dwa", "--train.dwa_period", "100"],
    "random": ["--train.loss_weighting", "random"],
    "mixed": ["--sampling.strategy", "mixed"],
    **{
        name: ["--sampling.strategy", "mixed", "--train.gradient_aggregation", name]
        for name in ("pcgrad", "cagrad", "upgrad", "mgda", "imtl_g")
    },
    "pcgrad_top": [
        "--sampling.strategy",
        "mixed",
        "--train.gradient_aggregation",
        "pcgrad",
        "--train.aggregation_params",
        "conditioning_and_top",
    ],
}
OUT = ROOT / "benchmarks" / "results" / "optimisation.json"


def recipe_args(data_dir: str, sst2_rows: int, max_length: int, out: str) -> list[str]:
    from benchmarks.converged import ARMS

    return [
        "--config",
        str(ROOT / "configs" / "glue.yaml"),
        "--output_dir",
        out,
        "--data.data_dir",
        data_dir,
        "--data.max_train_rows",
        str(sst2_rows),
        "--data.max_length",
        str(max_length),
        "--train.report_to",
        "none",
        "--train.eval_every",
        "0",
        "--train.save_every",
        "0",
        "--train.max_steps",
        "1000",
        *ARMS["camtl-unc-prop-unfrozen"],
    ]


def build_runs(methods: list[str], args) -> dict:
    """One prepared `camtl.trainer.Run` per method, sharing the data, the model and (but for uncertainty weighting)
    the optimiser and schedule of the first."""
    from camtl import trainer
    from camtl.config import parse_config, resolve_config, validate_config

    work = Path(tempfile.mkdtemp(prefix="camtl-opt-bench-"))
    runs: dict = {}
    setup = None
    for name in methods:
        cfg = parse_config(
            recipe_args(args.data_dir, args.sst2_rows, args.max_length, str(work / name)) + METHODS[name],
            exit_on_error=False,
        )
        if setup is None:
            setup = trainer.setup(cfg)
            mine = setup
        else:
            cfg = resolve_config(cfg)
            validate_config(cfg)
            mine = dataclasses.replace(setup, cfg=cfg)
        run = trainer.prepare(mine)
        if runs and run.weighting.name != "uncertainty":
            first = next(iter(runs.values()))
            run = dataclasses.replace(run, optimizer=first.optimizer, scheduler=first.scheduler)
        run.model.train()
        runs[name] = run
    return runs


def time_steps(runs: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each method's steps, interleaved: ``warmup`` untimed steps each, then ``rounds`` rounds."""
    from camtl import trainer

    states = {name: SimpleNamespace(window=trainer.LossWindow.empty(len(run.tasks))) for name, run in runs.items()}
    for _ in range(warmup):
        for name, run in runs.items():
            trainer._train_step(run, states[name])
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            trainer._train_step(runs[name], states[name])
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    return times


def paired_ratios(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Median over the rounds of ``t_method / t_baseline`` in the same round."""
    return {name: statistics.median(t / b for t, b in zip(ts, times[baseline])) for name, ts in times.items()}


def step_time(args) -> dict:
    from benchmarks.speed import cpu_name

    methods = ["default", *[m for m in args.methods if m != "default"]]
    runs = build_runs(methods, args)
    times = time_steps(runs, args.rounds, args.warmup)
    record = {
        "kind": "step_time",
        "command": "python benchmarks/optimisation.py " + shlex.join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores",
        "threads": int(os.environ.get("OMP_NUM_THREADS") or 0),
        "load_average_at_end": os.getloadavg()[0],
        "rounds": args.rounds,
        "warmup": args.warmup,
        "global_batch": runs["default"].sampler.batch_size,
        "max_length": args.max_length,
        "mixed_precision": runs["default"].cfg.train.mixed_precision,
        "sst2_rows": args.sst2_rows,
        "median_step_s": {n: statistics.median(t) for n, t in times.items()},
        "ratio_to_default": paired_ratios(times, "default"),
        **({"ratio_to_mixed": paired_ratios(times, "mixed")} if "mixed" in times else {}),
        "step_s": times,
    }
    append(Path(args.out), record)
    for name in methods:
        extra = f", {record['ratio_to_mixed'][name]:.2f}x mixed" if "mixed" in times else ""
        print(
            f"{name:12s} {record['median_step_s'][name]:.2f} s  {record['ratio_to_default'][name]:.2f}x default" + extra
        )
    return record


def append(out: Path, record: dict) -> None:
    """Add ``record`` to the results file's list (created when missing)."""
    records = json.loads(out.read_text()) if out.exists() else []
    records.append(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))


def converged(args) -> dict:
    """`benchmarks/converged.py` on the methods' arms (``opt-<method>``): its protocol, records and resumption."""
    from benchmarks import converged as conv

    arms = [f"opt-{m.replace('_', '-')}" for m in args.methods if m != "default"]
    if args.with_default:
        arms.insert(0, "camtl-unc-prop-unfrozen")
    extra = ["--lrs", *args.lrs, "--seeds", *map(str, args.seeds), "--save_every", str(args.save_every)]
    return conv.main(["--arms", *arms, *extra, *(["--out", args.converged_out] if args.converged_out else [])])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("step_time", help="time per step of each method, as a ratio to the default step")
    st.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    st.add_argument("--rounds", type=int, default=8)
    st.add_argument("--warmup", type=int, default=2)
    st.add_argument("--sst2_rows", type=int, default=16000)
    st.add_argument("--max_length", type=int, default=128)
    st.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    st.add_argument("--out", default=str(OUT))
    cv = sub.add_parser("converged", help="converged GLUE-5 runs (benchmarks/converged.py's protocol and file)")
    cv.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in METHODS if m not in ("default", "pcgrad_top")],
        choices=[m for m in METHODS if m not in ("default", "pcgrad_top")],
    )
    cv.add_argument("--with_default", action="store_true", help="also run the recipe itself (already on file)")
    cv.add_argument("--lrs", nargs="+", default=["1e-4"])
    cv.add_argument("--seeds", nargs="+", type=int, default=[42])
    cv.add_argument("--save_every", type=int, default=200)
    cv.add_argument("--converged_out", default=None, help="default: benchmarks/results/converged.json")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return step_time(args) if args.command == "step_time" else converged(args)


if __name__ == "__main__":
    main()
