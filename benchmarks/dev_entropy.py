"""How uncertain trained CA-MTL models are on each task's dev set: MT-Uncertainty's score, read after training.

For each model folder and each classification task: the mean normalised entropy of the predictions (the score
MT-Uncertainty ranks candidates by), split by right and wrong predictions, how many wrong predictions are confident
(entropy below 0.5), and the share of each predicted class. It explains which task MT-Uncertainty fed and which it
starved (BENCHMARKS.md, "Quality at convergence").

With ``--allocation_steps N`` (default 40), it also replays MT-Uncertainty's task allocation with the trained model
frozen: N steps of the paper's entropy allocation (``--sampling.allocation entropy``, the default floor, batch 32,
candidates from the training files with SST-2 capped at 16,000 rows as in the converged benchmark, train.py's
scorer), counting the rows each task gets.
A fixed model stands in for the late steps of training, where the entropies have settled.

    python benchmarks/dev_entropy.py outputs/converged/converged/camtl-unc-unfrozen-lr0.0001-seed42 \
        outputs/converged/converged/camtl-unfrozen-lr0.0001-seed42
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from camtl.readers import MultiTaskCollator, tokenize_split  # noqa: E402
from camtl.tasks import get_task, load_split, resolve_labels  # noqa: E402
from camtl.trainer import predict, rows_to_features  # noqa: E402

CONFIDENT = 0.5  # a normalised entropy below this is a confident prediction


def task_entropy(model, tokenizer, accelerator, name: str, data_dir: str, max_length: int) -> dict:
    """Entropy statistics of one classification task's dev predictions."""
    task_id = model.config.task_names.index(name)
    ds = tokenize_split(
        load_split(resolve_labels(get_task(name)), "validation", data_dir=data_dir), tokenizer, max_length, task_id
    )
    features = rows_to_features(ds, range(len(ds)))
    collator = MultiTaskCollator(tokenizer)
    both = np.array(
        predict(
            model,
            features,
            collator,
            accelerator,
            64,
            lambda output: torch.stack([output.entropy.float(), output.logits.argmax(-1).float()], -1),
        )
    )
    entropy, preds = both[:, 0], both[:, 1].astype(int)  # (rows,) each
    labels = np.array([f["labels"] for f in features])
    wrong = preds != labels
    classes = len(model.config.tasks[task_id]["labels"])
    return {
        "mean": float(entropy.mean()),
        "right": float(entropy[~wrong].mean()),
        "wrong": float(entropy[wrong].mean()) if wrong.any() else None,
        "wrong_rows": int(wrong.sum()),
        "wrong_confident": int((wrong & (entropy < CONFIDENT)).sum()),
        "accuracy": float(1 - wrong.mean()),
        "predicted_share": (np.bincount(preds, minlength=classes) / len(preds)).round(4).tolist(),
    }


def replay_allocation(
    model,
    tokenizer,
    accelerator,
    data_dir: str,
    max_length: int,
    steps: int,
    max_train_rows: int = 16000,
    seed: int = 42,
    batch_size: int = 32,
) -> dict:
    """Rows of each task in ``steps`` batches of MT-Uncertainty's entropy allocation, the model scoring the candidates
    with train.py's scorer; training rows capped as the converged benchmark caps them (only SST-2 has more)."""
    from camtl.sampling import EntropyUncertaintySampler
    from camtl.trainer import EntropyScorer, MultiTaskBatches

    names = list(model.config.task_names)
    tasks = [resolve_labels(get_task(name)) for name in names]
    sets = [
        tokenize_split(
            load_split(task, "train", data_dir=data_dir, max_rows=max_train_rows, seed=seed),
            tokenizer,
            max_length,
            task_id,
        )
        for task_id, task in enumerate(tasks)
    ]
    sampler = EntropyUncertaintySampler(
        [len(ds) for ds in sets],
        batch_size,
        seed=0,
        regression_tasks=[t.kind == "regression" for t in tasks],
        task_names=names,
    )
    scorer = EntropyScorer(accelerator, model, MultiTaskBatches(sampler, sets, MultiTaskCollator(tokenizer)), 64)
    counts = np.zeros(len(names), dtype=np.int64)
    for _ in range(steps):
        counts += np.bincount([t for t, _ in sampler.next_batch(scorer)], minlength=len(names))
    floor = sampler.min_rows_per_task * steps
    return {
        "steps": steps,
        "batch_size": batch_size,
        "floor_rows_per_task": sampler.min_rows_per_task,
        "rows": dict(zip(names, counts.tolist())),
        "share": dict(zip(names, (counts / counts.sum()).round(4).tolist())),
        "share_above_floor": dict(
            zip(names, ((counts - floor) / max(1, counts.sum() - floor * len(names))).round(4).tolist())
        ),
        "proportional_share": dict(
            zip(names, (np.array([len(ds) for ds in sets]) / sum(len(ds) for ds in sets)).round(4).tolist())
        ),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="trained CA-MTL model folders")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dev_entropy.json"))
    parser.add_argument("--allocation_steps", type=int, default=40, help="0: skip the allocation replay")
    args = parser.parse_args(argv)

    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from camtl.config import native_bf16
    from modeling_camtl import CaMtlForMultiTask

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if native_bf16() else "no")
    results = {
        "command": "python benchmarks/dev_entropy.py "
        + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "confident_below": CONFIDENT,
        "models": {},
        "allocation": {},
    }
    for folder in args.models:
        model = CaMtlForMultiTask.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        names = [t["name"] for t in model.config.tasks if t["kind"] == "classification"]
        results["models"][Path(folder).name] = {
            name: task_entropy(model, tokenizer, accelerator, name, args.data_dir, args.max_length) for name in names
        }
        if args.allocation_steps:
            results["allocation"][Path(folder).name] = replay_allocation(
                model, tokenizer, accelerator, args.data_dir, args.max_length, args.allocation_steps
            )
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    for model_name, tasks in results["models"].items():
        print(model_name)
        for name, r in tasks.items():
            print(
                f"  {name}: entropy {r['mean']:.3f} (right {r['right']:.3f}, wrong {r['wrong'] or 0:.3f}); "
                f"confident wrong {r['wrong_confident']}/{r['wrong_rows']}; predicted {r['predicted_share']}"
            )
        if model_name in results["allocation"]:
            a = results["allocation"][model_name]
            print(
                f"  MT-Uncertainty rows over {a['steps']} steps: {a['rows']} (share above the floor "
                f"{a['share_above_floor']}; proportional {a['proportional_share']})"
            )
    return results


if __name__ == "__main__":
    main()
