"""Task scaling: does one CA-MTL model get better on GLUE-5 as it trains on more tasks? (issue 22)

The converged protocol of `benchmarks/converged.py`, on more tasks:

- evaluation targets: the five GLUE dev sets, whole, as there (so its single-task, plain-MTL and CA-MTL rows stay the
  comparison: the ``glue5`` point of the curve is read from ``benchmarks/results/converged.json``, not run again);
  every auxiliary task is also scored on its own held-out rows;
- budget: each GLUE task keeps its converged-budget steps (2,419 in all); each auxiliary task adds three passes over
  its training rows after the leakage filter (`camtl.leakage`, against the dev sets of every task of the set) and
  its cap (``AUX_CAP`` rows for the large sets: a capped pass would leave most of a 5,000-row budget unused);
- arms: ``camtl`` (configs/glue.yaml's recipe: MT-Uncertainty with proportional allocation, nothing frozen) and
  ``plain-mtl`` (no conditional module, proportional sampling), at the converged rate (1e-4);
- ``donor-first``: what a careful practitioner would try instead of one model: single-task fine-tuning with a donor
  first: MiniLM fine-tuned on the donor (one run of the single-task arm, the target's dev set protected by the
  leakage filter), its encoder then fine-tuned on the target at the target's converged budget. RTE after SNLI,
  STS-B after SICK-R; CoLA, SST-2 and MRPC keep their single-task runs (converged.json, the same seed and rate);
- ``aux-single``: each auxiliary task of a set against its own single-task fine-tune (MiniLM, the single-task arm of
  the converged benchmark): the same training rows as the multi-task runs of that set (the dev sets of every task of
  the set protected), the same ``AUX_PASSES`` steps, scored on the same held-out rows.

Each run is one record in ``--out``, written when it finishes; a record already there is not run again and a run
killed midway resumes from its last checkpoint (``--save_every``).

    python benchmarks/task_scaling.py --sets glue10 --arms camtl plain-mtl --seeds 42
    python benchmarks/task_scaling.py --arms donor-first --seeds 42
    python benchmarks/task_scaling.py --sets glue10 --arms aux-single --seeds 42
    python benchmarks/task_scaling.py --sets all --arms aux-single --seeds 42 \
        --aux_tasks trec subj cr mpqa cb boolq wic ag_news   # only the tasks glue10 lacks
    python benchmarks/task_scaling.py --plot        # the table (.md) and docs/task_scaling.png from the records
"""

from __future__ import annotations

import argparse
import contextlib
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
from benchmarks.converged import ARMS as CONVERGED_ARMS  # noqa: E402
from benchmarks.converged import BATCH, PASSES, TASKS, run_wall, task_steps, train_rows  # noqa: E402
from benchmarks.quality import run_train  # noqa: E402
from benchmarks.speed import cpu_name  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
EXTRA = ROOT.parent / "shared" / "data" / "extra"
SST2_ROWS = 16000  # the converged protocol's cap on SST-2, for every arm
AUX_CAP = 5000  # the most training rows an auxiliary task keeps (SNLI 9,692 and MR 8,913 after the filter)
AUX_PASSES = 3
LR = 1e-4
QUIET = ["--train.monitoring_reference", "false"]  # a benchmark run serves nothing
#: The task sets of the curve. glue10 is configs/many_tasks.yaml's: GLUE-5 and the donors aimed at its small tasks.
TASK_SETS = {
    "glue5": TASKS,
    "glue10": TASKS + ["snli", "sick_e", "qnli_dev", "sick_r", "mr"],
    "all": TASKS
    + ["snli", "sick_e", "qnli_dev", "sick_r", "mr", "trec", "subj", "cr", "mpqa", "cb", "boolq", "wic", "ag_news"],
}
#: The converged benchmark's arm of each multi-task arm here (its glue5 point).
ARMS = {"camtl": "camtl-unc-prop-unfrozen", "plain-mtl": "plain-mtl"}
#: The issue's donor-first baseline: RTE after SNLI, STS-B after SICK-R (the GLUE tasks with the smallest sets).
DONORS = {"rte": "snli", "stsb": "sick_r"}


def aux_rows(tasks: list[str], protected: list[str] | None = None) -> dict[str, int]:
    """Training rows of each auxiliary task of ``tasks`` after the leakage filter and the ``AUX_CAP``: the filter
    protects every task's dev set, or the dev sets of ``protected`` (then exactly the run's ``--data.protected_tasks``)
    where given."""
    from camtl.build import clean_splits, resolve_tasks
    from camtl.config import DataArgs, RunConfig

    data = DataArgs(tasks=list(tasks), data_dir=str(GLUE), extra_dir=str(EXTRA))
    if protected is not None:
        data.protected_tasks = list(protected)
    cfg = RunConfig(data=data)
    defs = resolve_tasks(cfg)
    aux = [i for i, t in enumerate(defs) if t.name not in TASKS]
    clean, _, _ = clean_splits(cfg, defs, aux)
    return {name: min(len(rows), AUX_CAP) for name, rows in clean.items()}


def protocol(sets: dict[str, list[str]]) -> dict:
    """Steps of every task set: the GLUE tasks' converged steps plus ``AUX_PASSES`` over each auxiliary task."""
    glue = task_steps(train_rows(str(GLUE), SST2_ROWS), PASSES["converged"])
    out = {
        "glue_steps": glue,
        "aux_passes": AUX_PASSES,
        "aux_cap": AUX_CAP,
        "batch": BATCH,
        "lr": LR,
        "sst2_rows": SST2_ROWS,
        "sets": {},
    }
    for name, tasks in sets.items():
        rows = aux_rows(tasks) if len(tasks) > len(TASKS) else {}
        steps = {**glue, **{t: math.ceil(n * AUX_PASSES / BATCH) for t, n in rows.items()}}
        out["sets"][name] = {"tasks": tasks, "aux_rows": rows, "steps": steps, "total_steps": sum(steps.values())}
    return out


def set_args(tasks: list[str]) -> list[str]:
    """train.py arguments for a task set: its tasks, the extra data and the auxiliary caps."""
    budgets = ", ".join(f"{t}: {AUX_CAP}" for t in tasks if t not in TASKS)
    return [
        "--data.tasks",
        "[" + ", ".join(tasks) + "]",
        "--data.extra_dir",
        str(EXTRA),
        "--data.max_train_rows",
        str(SST2_ROWS),
        "--sampling.task_budgets",
        "{" + budgets + "}",
    ]


def _record(kind: str, set_name: str, arm: str, seed: int, res: dict, names: list[str], start: float) -> dict:
    return {
        "set": set_name,
        "arm": arm,
        "seed": seed,
        "kind": kind,
        "steps": res["steps"],
        "tasks": {t: res["tasks"][t] for t in names},
        "glue_average": statistics.fmean(res["tasks"][t]["main"] for t in TASKS if t in names)
        if all(t in names for t in TASKS)
        else None,
        "parameters_trained": res["parameters"]["trainable"],
        "examples_trained": res["examples_trained"],
        "leakage": res.get("leakage"),
        "train_wall_time_s": res["wall_time_s"],
        "wall_time_s": round(time.time() - start, 1),
        "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
    }


def run_set(set_name: str, arm: str, seed: int, proto: dict, args) -> dict:
    """One multi-task run of ``arm`` on a task set."""
    spec = proto["sets"][set_name]
    extra = (
        CONVERGED_ARMS[ARMS[arm]]
        + set_args(spec["tasks"])
        + [
            "--train.seed",
            str(seed),
            "--train.learning_rate",
            str(LR),
            "--train.max_steps",
            str(spec["total_steps"]),
            *QUIET,
        ]
    )
    start = time.time()
    res = run_train(Path(args.work_dir) / f"{set_name}-{arm}-seed{seed}", extra, args, save_every=args.save_every)
    return _record("multi-task", set_name, arm, seed, res, spec["tasks"], start)


def export_encoder(camtl_dir: Path, out: Path) -> Path:
    """The encoder and pooler of a single-task run (no conditional module: a plain BERT) as a BERT checkpoint folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from modeling_camtl import CaMtlForMultiTask
    from modeling_camtl.configuration_camtl import BERT_FIELDS
    from modeling_camtl.modeling_camtl import is_camtl_parameter

    model = CaMtlForMultiTask.from_pretrained(camtl_dir)
    bert = BertModel(
        BertConfig(**{f: getattr(model.config, f) for f in BERT_FIELDS})
    )  # with its pooler, which the heads read
    state = {
        k.removeprefix("bert."): v
        for k, v in model.state_dict().items()
        if k.startswith("bert.") and not is_camtl_parameter(k)
    }
    missing, _ = bert.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"{camtl_dir}: the encoder lacks {missing[:5]}")
    bert.save_pretrained(out)
    AutoTokenizer.from_pretrained(camtl_dir).save_pretrained(out)
    return out


def run_donor_first(target: str, seed: int, proto: dict, args) -> dict:
    """MiniLM fine-tuned on the target's donor (``AUX_PASSES`` over its capped rows, the target's dev set protected),
    then its encoder fine-tuned on the target at the converged budget."""
    donor = DONORS[target]
    single = CONVERGED_ARMS["single-task"]
    work = Path(args.work_dir) / f"donor-first-seed{seed}"
    start = time.time()
    rows = aux_rows([donor], protected=[target])[donor]  # the rows the run below trains on: the same protection
    first = run_train(
        work / f"{donor}-for-{target}",
        single
        + [
            "--data.tasks",
            f"[{donor}]",
            "--data.extra_dir",
            str(EXTRA),
            "--data.protected_tasks",
            f"[{target}]",
            "--sampling.task_budgets",
            f"{{{donor}: {AUX_CAP}}}",
            "--train.seed",
            str(seed),
            "--train.learning_rate",
            str(LR),
            "--train.max_steps",
            str(math.ceil(rows * AUX_PASSES / BATCH)),
            *QUIET,
        ],
        args,
        save_every=args.save_every,
    )
    encoder = work / f"{donor}-encoder"
    if not (encoder / "config.json").exists():
        export_encoder(work / f"{donor}-for-{target}", encoder)
    res = run_train(
        work / target,
        single
        + [
            "--model.base_model",
            str(encoder),
            "--data.tasks",
            f"[{target}]",
            "--data.max_train_rows",
            str(SST2_ROWS),
            "--train.seed",
            str(seed),
            "--train.learning_rate",
            str(LR),
            "--train.max_steps",
            str(proto["glue_steps"][target]),
            *QUIET,
        ],
        args,
        save_every=args.save_every,
    )
    record = _record("donor-first", "glue5+donor", "donor-first", seed, res, [target], start)
    record.update(
        target=target,
        donor=donor,
        donor_steps=first["steps"],
        donor_scores=first["tasks"][donor],
        donor_wall_time_s=first["wall_time_s"],
    )
    return record


def aux_single_args(task: str, set_name: str, seed: int, proto: dict) -> list[str]:
    """train.py arguments of an auxiliary task's own fine-tune: the rows and steps that task has in the multi-task
    runs of ``set_name`` (the same leakage protection: the dev sets of every task of the set)."""
    spec = proto["sets"][set_name]
    if task not in spec["aux_rows"]:
        raise ValueError(f"{task!r} is not an auxiliary task of {set_name}: {sorted(spec['aux_rows'])}")
    return CONVERGED_ARMS["single-task"] + [
        "--data.tasks",
        f"[{task}]",
        "--data.extra_dir",
        str(EXTRA),
        "--data.protected_tasks",
        "[" + ", ".join(spec["tasks"]) + "]",
        "--sampling.task_budgets",
        f"{{{task}: {AUX_CAP}}}",
        "--train.seed",
        str(seed),
        "--train.learning_rate",
        str(LR),
        "--train.max_steps",
        str(spec["steps"][task]),
        *QUIET,
    ]


def run_aux_single(task: str, set_name: str, seed: int, proto: dict, args) -> dict:
    """One auxiliary task of a set fine-tuned alone (``aux_single_args``)."""
    start = time.time()
    res = run_train(
        Path(args.work_dir) / f"{set_name}-aux-single-seed{seed}" / task,
        aux_single_args(task, set_name, seed, proto),
        args,
        save_every=args.save_every,
    )
    record = _record("single-task", set_name, "aux-single", seed, res, [task], start)
    record["target"] = task
    return record


# ---------------------------------------------------------------- results


def run_key(r: dict) -> tuple:
    return r["set"], r["arm"], r["seed"], r.get("target")


def run_keys(arm: str, seed: int, args, proto: dict) -> list[tuple]:
    """The runs one ``arm`` and seed of the command line stand for, as ``run_key``s: a donor-first run per target, an
    auxiliary single-task run per auxiliary task of each set, a multi-task run per set."""
    if arm == "donor-first":
        return [("glue5+donor", arm, seed, target) for target in args.targets]
    if arm == "aux-single":
        keys = [(s, arm, seed, task) for s in args.sets for task in proto["sets"][s]["aux_rows"]]
        return [k for k in keys if not args.aux_tasks or k[3] in args.aux_tasks]
    return [(s, arm, seed, None) for s in args.sets]


@contextlib.contextmanager
def locked(out: Path):
    """The records of ``out``, saved on exit, under a lock: two queues (one thread each) may fill the same file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        results = load(out)
        yield results
        save(out, results)


def load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.exists() else {"commands": [], "runs": []}


def save(out: Path, results: dict) -> None:
    results["summary"] = summarise(results["runs"])
    results["aux_single"] = aux_single_summary(results["runs"])
    results["hardware"] = f"{cpu_name()}, {os.cpu_count()} cores"
    results["commands"] = list(dict.fromkeys(results["commands"]))  # a resumed run is one command
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(
        "\n".join(f"`{c}`" for c in results["commands"]) + "\n\n" + markdown(results) + "\n"
    )


def converged_points() -> dict[str, list[dict]]:
    """The glue5 point of each arm (and single-task at 1e-4) from the converged benchmark, per seed."""
    conv = json.loads((ROOT / "benchmarks" / "results" / "converged.json").read_text())
    out = {}
    for arm, name in [*ARMS.items(), ("single-task", "single-task")]:
        by_seed: dict[int, dict] = {}
        for r in conv["runs"]:
            if r["arm"] == name and r["lr"] == LR:
                by_seed.setdefault(r["seed"], {}).update(r["tasks"])
        out[arm] = [
            {
                "seed": s,
                "tasks": t,
                "glue_average": statistics.fmean(t[k]["main"] for k in TASKS),
                "wall_time_s": sum(
                    run_wall(r) for r in conv["runs"] if r["arm"] == name and r["lr"] == LR and r["seed"] == s
                ),
            }
            for s, t in sorted(by_seed.items())
            if set(t) >= set(TASKS)
        ]
    return out


def donor_first_seeds(runs: list[dict]) -> list[dict]:
    """Donor-first GLUE-5 results per seed: the donor runs' targets, the other tasks' single-task runs."""
    single = {p["seed"]: p for p in converged_points()["single-task"]}
    out = []
    for seed in sorted({r["seed"] for r in runs if r["arm"] == "donor-first"}):
        mine = {r["target"]: r for r in runs if r["arm"] == "donor-first" and r["seed"] == seed}
        if set(mine) != set(DONORS) or seed not in single:
            continue
        tasks = {t: (mine[t]["tasks"][t] if t in mine else single[seed]["tasks"][t]) for t in TASKS}
        out.append({"seed": seed, "tasks": tasks, "glue_average": statistics.fmean(tasks[t]["main"] for t in TASKS)})
    return out


def _stat(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarise(runs: list[dict]) -> dict:
    """Per (set, arm): the GLUE-5 average and each task's score over seeds; glue5 from the converged benchmark."""
    points = converged_points()
    table = {}
    for arm in ARMS:
        seeds = points[arm]
        if seeds:
            table[f"glue5/{arm}"] = _summary(seeds, TASKS)
    for set_name in TASK_SETS:
        for arm in ARMS:
            seeds = [r for r in runs if r["set"] == set_name and r["arm"] == arm and r["kind"] == "multi-task"]
            if seeds:
                table[f"{set_name}/{arm}"] = _summary(seeds, TASK_SETS[set_name])
    table["glue5/single-task"] = _summary(points["single-task"], TASKS)
    donor = donor_first_seeds(runs)
    if donor:
        table["glue5+donor/donor-first"] = _summary(donor, TASKS)
    return table


def aux_single_summary(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """Per set and auxiliary task: its own fine-tune's score over seeds, steps and wall time."""
    out: dict[str, dict[str, dict]] = {}
    for r in runs:
        if r["arm"] == "aux-single":
            out.setdefault(r["set"], {}).setdefault(r["target"], []).append(r)
    return {
        set_name: {
            task: {
                "score": _stat([r["tasks"][task]["main"] for r in rs]),
                "seeds": [r["seed"] for r in rs],
                "steps": rs[0]["steps"],
                "wall_time_s": _stat([run_wall(r) for r in rs]),
            }
            for task, rs in sorted(by_task.items(), key=lambda kv: TASK_SETS["all"].index(kv[0]))
        }
        for set_name, by_task in out.items()
    }


def _summary(seeds: list[dict], names: list[str]) -> dict:
    return {
        "seeds": [s["seed"] for s in seeds],
        "glue_average": _stat([s["glue_average"] for s in seeds]),
        "tasks": {t: _stat([s["tasks"][t]["main"] for s in seeds]) for t in names},
        "wall_time_s": _stat([run_wall(s) for s in seeds]) if all("wall_time_s" in s for s in seeds) else None,
        "examples_trained": seeds[0].get("examples_trained"),
        "steps": seeds[0].get("steps"),
    }


def _pm(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f}" + (f" ± {100 * stat['std']:.1f}" if stat["n"] > 1 else "")


def markdown(results: dict) -> str:
    table = results["summary"]
    aux = sorted({t for row in table.values() for t in row["tasks"] if t not in TASKS}, key=TASK_SETS["all"].index)
    lines = [
        "| set / arm | seeds | " + " | ".join(TASKS) + " | **GLUE-5 avg** | steps | wall |",
        "|" + "---|" * (len(TASKS) + 5),
    ]
    for key, row in table.items():
        wall = f"{row['wall_time_s']['mean'] / 60:.0f} min" if row["wall_time_s"] else ""
        lines.append(
            f"| {key} | {len(row['seeds'])} | "
            + " | ".join(_pm(row["tasks"][t]) for t in TASKS)
            + f" | **{_pm(row['glue_average'])}** | {row['steps'] or ''} | {wall} |"
        )
    with_aux = [key for key, row in table.items() if any(t in row["tasks"] for t in aux)]
    if with_aux:  # one row per auxiliary task, one column per multi-task row: 13 columns would not read across
        lines += [
            "",
            "Auxiliary tasks on their own held-out rows (the multi-task rows above):",
            "",
            "| task | " + " | ".join(with_aux) + " |",
            "|" + "---|" * (len(with_aux) + 1),
        ]
        for t in aux:
            cells = [_pm(table[key]["tasks"][t]) if t in table[key]["tasks"] else "" for key in with_aux]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    donors = [r for r in results["runs"] if r["arm"] == "donor-first"]
    if donors:
        lines += [
            "",
            "Donor-first runs (the donor's own score on its held-out rows, then the target's dev score):",
            "",
            "| target | donor | donor steps | donor score | target steps | target score | wall |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in donors:
            lines.append(
                f"| {r['target']} | {r['donor']} | {r['donor_steps']} | {100 * r['donor_scores']['main']:.1f}"
                f" | {r['steps']} | {100 * r['tasks'][r['target']]['main']:.1f} | "
                f"{(r['donor_wall_time_s'] + r['train_wall_time_s']) / 60:.0f} min |"
            )
    for set_name, tasks in aux_single_summary(results["runs"]).items():
        arms = [arm for arm in ARMS if f"{set_name}/{arm}" in table]
        lines += [
            "",
            f"Auxiliary tasks of {set_name}, each fine-tuned alone (the same rows and steps) against the multi-task "
            "arms (their held-out rows):",
            "",
            "| " + " | ".join(["task", "seeds", "steps", "single-task", *arms, "wall (single)"]) + " |",
            "|" + "---|" * (len(arms) + 5),
        ]
        for task, row in tasks.items():
            cells = [task, len(row["seeds"]), row["steps"], _pm(row["score"])]
            cells += [_pm(table[f"{set_name}/{arm}"]["tasks"][task]) for arm in arms]
            lines.append("| " + " | ".join(map(str, [*cells, f"{row['wall_time_s']['mean'] / 60:.0f} min"])) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """GLUE-5 dev average against the number of tasks for both arms (mean and seed spread), single-task's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["summary"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, colour in [("camtl", "tab:blue"), ("plain-mtl", "tab:orange")]:
        pts = [(len(TASK_SETS[s]), table[f"{s}/{arm}"]) for s in TASK_SETS if f"{s}/{arm}" in table]
        if pts:
            ax.errorbar(
                [n for n, _ in pts],
                [100 * r["glue_average"]["mean"] for _, r in pts],
                yerr=[100 * r["glue_average"]["std"] for _, r in pts],
                marker="o",
                capsize=4,
                color=colour,
                label=f"{arm} (seeds: {', '.join(str(len(r['seeds'])) for _, r in pts)})",
            )
    single = table["glue5/single-task"]["glue_average"]
    ax.axhline(
        100 * single["mean"], color="gray", ls="--", label=f"single-task, one model per task ({single['n']} seeds)"
    )
    ax.axhspan(100 * (single["mean"] - single["std"]), 100 * (single["mean"] + single["std"]), color="gray", alpha=0.15)
    if "glue5+donor/donor-first" in table:
        donor = table["glue5+donor/donor-first"]["glue_average"]
        ax.axhline(100 * donor["mean"], color="tab:green", ls=":", label="single-task, donor first")
    ax.set_xlabel("tasks trained (GLUE-5 + auxiliary)")
    ax.set_ylabel("GLUE-5 dev average")
    ax.set_xticks(sorted({len(t) for t in TASK_SETS.values()}))
    ax.set_title("MiniLM-L6, converged budget, lr 1e-4")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["glue10"], choices=[s for s in TASK_SETS if s != "glue5"])
    parser.add_argument(
        "--arms", nargs="+", default=["camtl", "plain-mtl"], choices=[*ARMS, "donor-first", "aux-single"]
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=list(DONORS),
        choices=list(DONORS),
        help="donor-first: the GLUE tasks to run with their donor",
    )
    parser.add_argument(
        "--aux_tasks",
        nargs="+",
        default=None,
        help="aux-single: only these auxiliary tasks of the set (default: all of them), e.g. the ones a smaller set "
        "lacks",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--save_every", type=int, default=200)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "task_scaling"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "task_scaling.json"))
    parser.add_argument("--plot", action="store_true", help="only rewrite the table and the plot from the records")
    args = parser.parse_args(argv)
    args.data_dir, args.learning_rate = str(GLUE), LR  # run_train's
    for set_name in args.sets if args.aux_tasks else []:
        aux = TASK_SETS[set_name][len(TASKS) :]
        if missing := [t for t in args.aux_tasks if t not in aux]:
            parser.error(f"--aux_tasks {', '.join(missing)}: not in {set_name}; its auxiliary tasks: {', '.join(aux)}")
    out = Path(args.out)
    if args.plot:
        with locked(out) as results:
            pass
        plot(results, ROOT / "docs" / "task_scaling.png")
        print(markdown(results))
        return results
    proto = protocol({s: TASK_SETS[s] for s in args.sets})
    with locked(out) as results:
        known = results.setdefault("protocol", {})
        for name, spec in proto["sets"].items():
            if known.get("sets", {}).get(name, spec) != spec:
                raise SystemExit(f"{out} holds {name} runs of another protocol:\n{known['sets'][name]}\nnot\n{spec}")
        known.update({k: v for k, v in proto.items() if k != "sets"})
        known.setdefault("sets", {}).update(proto["sets"])
        command = "python benchmarks/task_scaling.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        results["commands"].append(command)
    for seed in args.seeds:
        for arm in args.arms:
            for key in run_keys(arm, seed, args, proto):
                if key in {run_key(r) for r in load(out)["runs"]}:
                    continue
                set_name, _, _, item = key
                if arm == "donor-first":
                    record = run_donor_first(item, seed, proto, args)
                elif arm == "aux-single":
                    record = run_aux_single(item, set_name, seed, proto, args)
                else:
                    record = run_set(set_name, arm, seed, proto, args)
                record["command"] = command
                with locked(out) as results:  # another queue may have added records meanwhile
                    results["runs"].append(record)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
