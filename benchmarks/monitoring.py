"""Monitoring benchmark: does `camtl.monitoring` raise alarms on real shifted traffic, and only then?

    nice -n 10 python benchmarks/monitoring.py                      # every scenario; resumes (done ones are skipped)
    nice -n 10 python benchmarks/monitoring.py --scenarios no_shift cr --windows 50   # some, fewer windows each

Inference only, on the shipped default model (fp32, one thread). Every row's outputs (logits, pooled vector, token
descriptors) are computed once and cached in ``outputs/benchmarks/monitoring_features/``; the scenarios then draw
windows of requests from them and run :func:`camtl.monitoring.compare`, the monitor's own test, on each:

| scenario | the reference | the windows |
|---|---|---|
| ``no_shift`` | per window, a random part of the task's dev rows (all but a window) | the other dev rows |
| ``cr``, ``subj``, ``mpqa``, ``ag_news``, ``trec`` | all SST-2 dev rows | those rows sent as SST-2 |
| ``cola_as_sst2``, ``mrpc_as_sst2`` | all SST-2 dev rows | wrong routing: CoLA rows, MRPC pairs (joined) |
| ``snli_as_rte``, ``sick_as_rte``, ``sick_as_stsb`` | all RTE / STS-B dev rows | SNLI / SICK pairs |
| ``label_shift`` | a random 472 SST-2 dev rows | the other 400, resampled to 90% positive (true label) |
| ``mix`` | a random part of SST-2 dev (all but a window) | the other rows with 5-50% AG News, windows 50-500 |

Each record (appended to ``benchmarks/results/monitoring.json`` as it lands) gives the share of windows that alarm
(the false-alarm rate for ``no_shift``, the detection power otherwise), warn, and in which each signal fires on its
own (Bonferroni-corrected p below 0.05), the share of requests flagged, and for classification the estimated
accuracy (mean calibrated confidence, and ATC) against the real accuracy. ``cr`` also tries temperature scaling on a
more diverse held-out set (SST-2 dev and 500 MPQA phrases). The ``mix`` records make ``docs/monitoring_power.png``.
Figures and the commands: BENCHMARKS.md ("Monitoring").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camtl import monitoring as M  # noqa: E402
from camtl.paths import PROJECT_ROOT  # noqa: E402

GLUE = PROJECT_ROOT.parent / "shared" / "data" / "glue"
EXTRA = PROJECT_ROOT.parent / "shared" / "data" / "extra"
FEATURES = PROJECT_ROOT / "outputs" / "benchmarks" / "monitoring_features"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "monitoring.json"
PLOT = PROJECT_ROOT / "docs" / "monitoring_power.png"
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
#: Rows sent to a task: (name, the task they are sent to, how they are read).
SHIFTS = {
    "cr": ("sst2", "cr"),
    "subj": ("sst2", "subj"),
    "mpqa": ("sst2", "mpqa"),
    "ag_news": ("sst2", "ag_news"),
    "trec": ("sst2", "trec"),
    "cola_as_sst2": ("sst2", "cola"),
    "mrpc_as_sst2": ("sst2", "mrpc"),
    "snli_as_rte": ("rte", "snli"),
    "sick_as_rte": ("rte", "sick_e"),
    "sick_as_stsb": ("stsb", "sick_r"),
}
MIX_SHARES, MIX_WINDOWS = (0.05, 0.10, 0.25, 0.50), (50, 100, 200, 500)
SAMPLE = 1000  # rows of a large shifted set
TRAIN_ROWS = 500  # train rows per task for the PCA basis
SCENARIOS = ("no_shift", *SHIFTS, "label_shift", "mix")


# --------------------------------------------------------------------------------------------------------------------
# Rows and their features (cached)
# --------------------------------------------------------------------------------------------------------------------
def read_rows(source: str) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    """``(texts, pairs, labels)`` of a source: ``glue:<task>:<split>`` or a name of :data:`SHIFTS`'s readers. Labels
    where they mean the labels of the task the rows are sent to (CR and MPQA: negative/positive as SST-2's)."""
    from camtl.tasks import load_split

    if source.startswith("glue:"):
        _, task, split = source.split(":")
        ds = load_split(task, split, GLUE, max_rows=TRAIN_ROWS if split == "train" else None, seed=0)
        pairs = list(ds["text_b"]) if task in ("mrpc", "stsb", "rte") else None
        return list(ds["text_a"]), pairs, np.asarray(ds["label"], dtype=float)
    if source in ("cola", "mrpc"):  # wrong routing: GLUE dev rows sent to SST-2 (a pair joined into one text)
        ds = load_split(source, "validation", GLUE)
        texts = [a if not b else f"{a} {b}" for a, b in zip(ds["text_a"], ds["text_b"])]
        return texts, None, None
    if source == "mpqa_calibration":  # MPQA's held-out split: not the rows of the mpqa windows (its train split)
        ds = load_split("mpqa", "validation", GLUE, extra_dir=EXTRA, max_rows=500, seed=0)
        return list(ds["text_a"]), None, np.asarray(ds["label"], dtype=float)
    import datasets

    splits = ("train",) if source == "mpqa" else ("train", "validation")  # MPQA's validation split calibrates
    parts = [load_split(source, split, GLUE, extra_dir=EXTRA) for split in splits]
    ds = datasets.concatenate_datasets(parts)
    ds = ds.shuffle(seed=0).select(range(min(len(ds), 2000 if source == "cr" else SAMPLE)))
    pair = source in ("snli", "sick_e", "sick_r")
    labels = np.asarray(ds["label"], dtype=float) if source == "cr" else None
    return list(ds["text_a"]), list(ds["text_b"]) if pair else None, labels


def nli_labels(source: str) -> list[str]:
    """The label names of an NLI source's rows, in :func:`read_rows`'s order."""
    import datasets

    from camtl.tasks import get_task, load_split

    names = get_task(source).labels
    ds = datasets.concatenate_datasets(
        [load_split(source, split, GLUE, extra_dir=EXTRA) for split in ("train", "validation")]
    )
    return [names[i] for i in ds.shuffle(seed=0).select(range(min(len(ds), SAMPLE)))["label"]]


def features(model, tokenizer, source: str, task: str) -> tuple[M.Features, np.ndarray | None]:
    """The model's features of ``source``'s rows sent as ``task`` (cached in :data:`FEATURES`)."""
    path = FEATURES / f"{source.replace(':', '-')}--{task}.npz"
    if not path.is_file():
        started = time.perf_counter()
        texts, pairs, labels = read_rows(source)
        f = M.extract_features(model, tokenizer, task, texts, pairs)
        FEATURES.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            logits=f.logits,
            pooled=f.pooled,
            lengths=f.lengths,
            unk_share=f.unk_share,
            labels=labels if labels is not None else np.zeros(0),
            texts=np.asarray(f.texts),
        )
        print(f"features {source} as {task}: {len(texts)} rows in {time.perf_counter() - started:.0f}s", flush=True)
    z = np.load(path)
    labels = z["labels"] if len(z["labels"]) else None
    return M.Features(z["logits"], z["pooled"], z["lengths"], z["unk_share"], list(z["texts"])), labels


# --------------------------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------------------------
def reference_of(spec, dev: M.Features, labels, train: M.Features, rows=None) -> M.TaskReference:
    idx = np.arange(len(dev)) if rows is None else rows
    return M.TaskReference.from_features(
        spec, dev.take(idx), None if labels is None else labels[idx], train.pooled, train_max_length=128
    )


def summarise(statuses: list, real: list | None = None) -> dict:
    """Shares of windows that alarm / warn / in which each signal fires, flag share, accuracy estimates."""
    n = len(statuses)
    out = {
        "windows": n,
        "alarm_rate": sum(s.status == "alarm" for s in statuses) / n,
        "warn_or_alarm_rate": sum(s.status != "ok" for s in statuses) / n,
        "signal_rates": {
            sig: sum(any(t.signal == sig and t.p_value * len(s.tests) < 0.05 for t in s.tests) for s in statuses) / n
            for sig in M.SIGNALS
        },
        "flagged_share": float(np.mean([s.descriptors["flagged_share"] for s in statuses])),
    }
    if statuses[0].estimated_accuracy is not None:
        out["estimated_accuracy"] = {
            k: float(np.mean([s.accuracy_estimates[k] for s in statuses])) for k in statuses[0].accuracy_estimates
        }
        out["reference_accuracy"] = statuses[0].reference_accuracy
    if real:
        out["real_accuracy"] = float(np.mean(real))
        out["mean_abs_error"] = {
            k: float(np.mean([abs(s.accuracy_estimates[k] - r) for s, r in zip(statuses, real)]))
            for k in statuses[0].accuracy_estimates
        }
    return out


def no_shift(ctx, task: str, window: int, windows: int, rng) -> dict:
    dev, labels = ctx.dev[task]
    window = min(window, len(dev) // 2)  # RTE (277 rows): windows of 138 beside a reference of 139
    statuses, real = [], []
    for i in range(windows):
        order = rng.permutation(len(dev))
        ref = reference_of(ctx.spec[task], dev, labels, ctx.train[task], order[window:])
        picked = order[:window]
        statuses.append(M.compare(ref, dev.take(picked), seed=i))
        if ref.spec["kind"] == "classification":
            real.append(float((dev.logits[picked].argmax(-1) == labels[picked]).mean()))
    return {"reference_rows": len(dev) - window, "window": window, **summarise(statuses, real or None)}


def shifted(ctx, name: str, window: int, windows: int, rng) -> dict:
    task, source = SHIFTS[name]
    rows, labels = features(ctx.model, ctx.tokenizer, source, task)
    if source in ("snli", "sick_e"):  # NLI labels as RTE's: entailment (0) or not (1)
        labels = np.asarray([0.0 if label == "entailment" else 1.0 for label in nli_labels(source)])
    ref = ctx.full_reference[task]
    statuses, real = [], []
    for i in range(windows):
        picked = rng.choice(len(rows), size=min(window, len(rows)), replace=False)
        statuses.append(M.compare(ref, rows.take(picked), seed=i))
        if labels is not None:
            real.append(float((rows.logits[picked].argmax(-1) == labels[picked]).mean()))
    record = {
        "task": task,
        "rows": source,
        "reference_rows": len(ctx.dev[task][0]),
        "window": window,
        **summarise(statuses, real or None),
    }
    if name == "cr":
        record["whole_set"] = cr_whole_set(ctx, rows, labels)
    return record


def cr_whole_set(ctx, rows: M.Features, labels: np.ndarray) -> dict:
    """Every CR row at once: the real accuracy, and the estimates with the temperature fitted on SST-2 dev alone and
    on SST-2 dev with 500 held-out MPQA phrases (a more diverse calibration set)."""
    dev, dev_labels = ctx.dev["sst2"]
    mpqa, mpqa_labels = features(ctx.model, ctx.tokenizer, "mpqa_calibration", "sst2")
    out = {"rows": len(rows), "real_accuracy": float((rows.logits.argmax(-1) == labels).mean())}
    for name, (logits, y) in {
        "sst2_dev": (dev.logits, dev_labels),
        "sst2_dev_and_mpqa": (np.concatenate([dev.logits, mpqa.logits]), np.concatenate([dev_labels, mpqa_labels])),
    }.items():
        t = M.fit_temperature(logits, y)
        held = M.softmax(logits, t).max(-1)
        threshold = np.quantile(held, 1 - float((logits.argmax(-1) == y).mean()))
        conf = M.softmax(rows.logits, t).max(-1)
        out[f"calibrated_on_{name}"] = {
            "temperature": t,
            "average_confidence": float(conf.mean()),
            "thresholded_confidence": float((conf > threshold).mean()),
        }
    out["importance_weighted"] = importance_weighted_accuracy(ctx.full_reference["sst2"], dev, dev_labels, rows)
    return out


def importance_weighted_accuracy(
    ref: M.TaskReference, dev: M.Features, labels: np.ndarray, target: M.Features
) -> float:
    """The held-out rows' accuracy reweighted towards ``target`` (covariate shift): weights ``p(target | x) /
    p(reference | x)`` from a logistic regression on the reduced pooled vectors, clipped to [0.01, 100]."""
    from sklearn.linear_model import LogisticRegression

    x_ref, x_target = ref.reduce(dev.pooled), ref.reduce(target.pooled)
    x = np.concatenate([x_ref, x_target])
    y = np.r_[np.zeros(len(x_ref)), np.ones(len(x_target))]
    p = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x, y).predict_proba(x_ref)[:, 1]
    w = np.clip(p / (1 - p), 0.01, 100)
    correct = dev.logits.argmax(-1) == labels
    return float((w * correct).sum() / w.sum())


def label_shift(ctx, window: int, windows: int, rng) -> dict:
    dev, labels = ctx.dev["sst2"]
    statuses, real = [], []
    for i in range(windows):
        order = rng.permutation(len(dev))
        ref_rows, rest = order[:472], order[472:]
        ref = reference_of(ctx.spec["sst2"], dev, labels, ctx.train["sst2"], ref_rows)
        pos, neg = rest[labels[rest] == 1], rest[labels[rest] == 0]
        picked = np.r_[
            rng.choice(pos, int(0.9 * window), replace=False),
            rng.choice(neg, window - int(0.9 * window), replace=False),
        ]
        statuses.append(M.compare(ref, dev.take(picked), seed=i))
        real.append(float((dev.logits[picked].argmax(-1) == labels[picked]).mean()))
    return {"task": "sst2", "positive_share": 0.9, "reference_rows": 472, "window": window, **summarise(statuses, real)}


def mix(ctx, share: float, window: int, windows: int, rng) -> dict:
    dev, labels = ctx.dev["sst2"]
    news, _ = features(ctx.model, ctx.tokenizer, "ag_news", "sst2")
    statuses = []
    n_news = int(round(share * window))
    for i in range(windows):
        order = rng.permutation(len(dev))
        ref = reference_of(ctx.spec["sst2"], dev, labels, ctx.train["sst2"], order[window:])
        own = dev.take(order[: window - n_news])
        other = news.take(rng.choice(len(news), n_news, replace=False))
        statuses.append(M.compare(ref, M.Features.concat([own, other]), seed=i))
    return {
        "task": "sst2",
        "ag_news_share": share,
        "reference_rows": len(dev) - window,
        "window": window,
        **summarise(statuses),
    }


# --------------------------------------------------------------------------------------------------------------------
class Context:
    """The model (a checkpoint folder; default: the shipped default model), its GLUE tasks' dev and train features
    and a reference of each task over all its dev rows."""

    def __init__(self, folder=None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from camtl.default_model import ensure_default_model

        torch.set_num_threads(1)
        folder = folder or ensure_default_model()
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
        self.spec = {t["name"]: t for t in self.model.config.tasks}
        self.tasks = [t for t in GLUE_TASKS if t in self.spec]
        self.dev = {t: features(self.model, self.tokenizer, f"glue:{t}:validation", t) for t in self.tasks}
        self.train = {t: features(self.model, self.tokenizer, f"glue:{t}:train", t)[0] for t in self.tasks}
        self.full_reference = {t: reference_of(self.spec[t], *self.dev[t], self.train[t]) for t in self.tasks}


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"records": []}


def append(results: dict, record: dict) -> None:
    results["records"].append(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, RESULTS)
    print(json.dumps({k: v for k, v in record.items() if k not in ("signal_rates",)}), flush=True)


def plan(scenarios, windows: int, tasks=GLUE_TASKS) -> list[tuple]:
    """``(key, scenario, args)`` of every record to make for a model with ``tasks``, in order."""
    jobs = []
    for sc in scenarios:
        if sc != "no_shift" and "sst2" not in tasks and sc not in SHIFTS:
            continue
        if sc == "no_shift":
            jobs += [((sc, t, 200), sc, (t, 200)) for t in GLUE_TASKS if t in tasks]
            jobs += [((sc, "sst2", w), sc, ("sst2", w)) for w in (50, 100, 500) if "sst2" in tasks]
        elif sc in SHIFTS:
            if SHIFTS[sc][0] not in tasks:
                continue
            jobs.append(((sc, 200), sc, (sc, 200)))
        elif sc == "label_shift":
            jobs.append(((sc, 200), sc, (200,)))
        elif sc == "mix":
            jobs += [((sc, s, w), sc, (s, w)) for s in MIX_SHARES for w in MIX_WINDOWS]
    return [(list(key), sc, args, windows) for key, sc, args in jobs]


def run(scenarios=SCENARIOS, windows: int = 200, shift_windows: int = 100, model=None, tasks=GLUE_TASKS) -> dict:
    """Make every record not yet in the results file (``model``: a checkpoint folder with ``tasks`` among its tasks;
    default: the shipped default model)."""
    results = load_results()
    done = {json.dumps(r["key"]) for r in results["records"]}
    ctx = None
    for key, sc, args, _ in plan(scenarios, windows, tasks):
        if json.dumps(key) in done:
            continue
        ctx = ctx or Context(model)
        rng = np.random.default_rng(zlib.crc32(json.dumps(key).encode()))  # each record its own fixed draws
        started = time.perf_counter()
        if sc == "no_shift":
            record = no_shift(ctx, *args, windows, rng)
            record["task"] = args[0]
        elif sc in SHIFTS:
            record = shifted(ctx, *args, shift_windows, rng)
        elif sc == "label_shift":
            record = label_shift(ctx, *args, shift_windows, rng)
        else:
            record = mix(ctx, *args, shift_windows // 2, rng)
        append(results, {"key": key, "scenario": sc, **record, "seconds": round(time.perf_counter() - started, 1)})
    if any(r["scenario"] == "mix" for r in results["records"]):
        plot(results)
    RESULTS.with_suffix(".md").write_text("# Monitoring benchmark (benchmarks/monitoring.py)\n\n" + table(results))
    return results


def pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def table(results: dict) -> str:
    """The records as Markdown tables (``benchmarks/results/monitoring.md``)."""
    records = results["records"]
    sig = list(M.SIGNALS)
    head = "| alarm % | " + " | ".join(s.replace("_", " ") for s in sig) + " | flagged % |"
    lines = [
        "## No shift: false alarms (windows of dev rows against a reference of the other dev rows)",
        "",
        "| task | window | reference rows | windows " + head + " estimated acc. (ATC / mean conf.) | real acc. |",
        "|---|---|---|---|---|" + "---|" * len(sig) + "---|---|---|",
    ]
    for r in (r for r in records if r["scenario"] == "no_shift"):
        est = r.get("estimated_accuracy") or {}
        lines.append(
            f"| {r['task']} | {r['window']} | {r['reference_rows']} | {r['windows']} | "
            f"{pct(r['alarm_rate'])} | "
            + " | ".join(pct(r["signal_rates"][s]) for s in sig)
            + f" | {pct(r['flagged_share'])} | {pct(est.get('thresholded_confidence'))} / "
            f"{pct(est.get('average_confidence'))} | {pct(r.get('real_accuracy'))} |"
        )
    lines += [
        "",
        "## Shifted traffic: detection power (windows of 200 against all the task's dev rows)",
        "",
        "| scenario | sent as | windows " + head + " estimated acc. (ATC / mean conf.) | real acc. |",
        "|---|---|---|---|" + "---|" * len(sig) + "---|---|---|",
    ]
    for r in (r for r in records if r["scenario"] not in ("no_shift", "mix")):
        est = r.get("estimated_accuracy") or {}
        name = r["scenario"] + (" (90% positive)" if r["scenario"] == "label_shift" else "")
        lines.append(
            f"| {name} | {r['task']} | {r['windows']} | {pct(r['alarm_rate'])} | "
            + " | ".join(pct(r["signal_rates"][s]) for s in sig)
            + f" | {pct(r['flagged_share'])} | {pct(est.get('thresholded_confidence'))} / "
            f"{pct(est.get('average_confidence'))} | {pct(r.get('real_accuracy'))} |"
        )
    mixes = [r for r in records if r["scenario"] == "mix"]
    if mixes:
        windows = sorted({r["window"] for r in mixes})
        lines += [
            "",
            "## SST-2 with AG News mixed in: alarm rate % by window size",
            "",
            "| AG News share | " + " | ".join(str(w) for w in windows) + " |",
            "|---|" + "---|" * len(windows),
        ]
        for share in sorted({r["ag_news_share"] for r in mixes}):
            by = {r["window"]: r for r in mixes if r["ag_news_share"] == share}
            lines.append(
                f"| {share:.0%} | " + " | ".join(pct(by[w]["alarm_rate"]) if w in by else "" for w in windows) + " |"
            )
    cr = next((r for r in records if r["scenario"] == "cr" and "whole_set" in r), None)
    if cr:
        w = cr["whole_set"]
        lines += [
            "",
            f"## CR: estimated against real accuracy, all {w['rows']} rows at once",
            "",
            "| calibration set | temperature | ATC | mean confidence | real |",
            "|---|---|---|---|---|",
        ]
        for key, label in (
            ("calibrated_on_sst2_dev", "SST-2 dev"),
            ("calibrated_on_sst2_dev_and_mpqa", "SST-2 dev + 500 MPQA phrases"),
        ):
            c = w[key]
            lines.append(
                f"| {label} | {c['temperature']:.2f} | {pct(c['thresholded_confidence'])} | "
                f"{pct(c['average_confidence'])} | {pct(w['real_accuracy'])} |"
            )
        lines.append(
            f"| importance-weighted SST-2 dev accuracy (logistic regression on the reduced vectors) | | "
            f"{pct(w['importance_weighted'])} | | {pct(w['real_accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict) -> None:
    """Detection power of each signal (and of the alarm) against the window size, one line per AG News share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in results["records"] if r["scenario"] == "mix"]
    panels = ["alarm", *M.SIGNALS]
    fig, grid = plt.subplots(2, 3, figsize=(10.5, 6.4), sharey=True)
    axes = grid.ravel()
    for ax, panel in zip(axes, panels):
        for share in sorted({r["ag_news_share"] for r in records}):
            rows = sorted((r for r in records if r["ag_news_share"] == share), key=lambda r: r["window"])
            rate = [r["alarm_rate"] if panel == "alarm" else r["signal_rates"][panel] for r in rows]
            ax.plot([r["window"] for r in rows], rate, marker="o", label=f"{share:.0%} AG News")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(MIX_WINDOWS, [str(w) for w in MIX_WINDOWS])
        ax.set_title("alarm (any signal, Bonferroni)" if panel == "alarm" else panel.replace("_", " "), fontsize=10)
        ax.set_xlabel("window (requests)")
        ax.axhline(0.05, color="grey", lw=0.6, ls=":")
        ax.set_ylim(-0.02, 1.02)
    for ax in grid[:, 0]:
        ax.set_ylabel("share of windows detected")
    axes[2].legend(fontsize=9, loc="center right")  # the labels panel: its lines stay near 0
    fig.suptitle("SST-2 traffic mixed with AG News: detection power per signal (the default model)", fontsize=11)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--windows", type=int, default=200, help="windows per no-shift record")
    parser.add_argument("--shift-windows", type=int, default=100, help="windows per shifted record (mixes: half)")
    args = parser.parse_args(argv)
    run(args.scenarios, args.windows, args.shift_windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
