"""Continual learning: teach a trained GLUE CA-MTL model a new task without forgetting the old ones.

The new task is SICK entailment (SemEval-2014 task 1, ``../shared/data/extra/SICK``: 4,500 train pairs, the 500
trial pairs as dev; three classes), which the GLUE model never saw. Two arms, same steps and batch:

  continual   ``train.py --model.init_from <GLUE CA-MTL> --model.trainable new_tasks``: the new task gets a task
              embedding (initialised from the mean of the old ones) and a head; only those train, so every old
              task's outputs stay bit-identical;
  single-task MiniLM fine-tuned on SICK-E alone (the whole encoder trains, no conditioning).

The old tasks' dev scores are read before (the GLUE model's own results) and after (evaluated in the continual run).

    python benchmarks/continual.py --glue-model outputs/benchmarks/camtl-unc-seed42 --steps 300
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
SICK = ROOT.parent / "shared" / "data" / "extra" / "SICK"
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
NO_CONDITIONING = "{conditional_alignment: false, conditional_attention: false, conditional_layer_norm: false, " \
                  "conditional_adapter: false}"


def sick_task() -> str:
    """SICK entailment as a user task (YAML flow mapping for the command line)."""
    return ("{name: sick_e, train_file: %s, validation_file: %s, format: tsv, "
            "text_columns: [sentence_A, sentence_B], label_column: entailment_judgment, "
            "labels: [ENTAILMENT, NEUTRAL, CONTRADICTION], metric: accuracy}"
            % (SICK / "SICK_train.txt", SICK / "SICK_trial.txt"))


def run(out_dir: Path, extra: list[str], args) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "glue.yaml"),
           "--output_dir", str(out_dir), "--overwrite_output_dir", "true", "--data.data_dir", str(args.data_dir),
           "--train.max_steps", str(args.steps), "--train.eval_every", "0", "--train.save_every", "0",
           "--train.report_to", "none", "--train.final_model", "last", "--train.seed", str(args.seed),
           "--sampling.strategy", "proportional", *extra]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    results = json.loads((out_dir / "results.json").read_text())
    results["benchmark_wall_time_s"] = round(time.time() - start, 1)
    return results


def max_metric_difference(before: dict, after: dict) -> float:
    """Largest absolute difference of any dev metric of the old tasks. Exactly 0 when both evaluations ran the
    same code; a metric computed by an older revision of the modeling file can differ in the last float bits."""
    return max(abs(before[t][m] - after[t][m]) for t in GLUE_TASKS for m in before[t])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-model", required=True, help="a trained CA-MTL folder (train.py output) on GLUE")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--continual-lr", type=float, default=1e-3)
    parser.add_argument("--single-lr", type=float, default=5e-5)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "benchmarks"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "continual.json"))
    args = parser.parse_args(argv)
    glue_model = Path(args.glue_model)
    before = json.loads((glue_model / "results.json").read_text())
    tasks = "[" + ", ".join(GLUE_TASKS) + ", " + sick_task() + "]"
    continual = run(Path(args.work_dir) / "continual-sick", [
        "--model.init_from", str(glue_model), "--model.trainable", "new_tasks", "--data.tasks", tasks,
        "--train.learning_rate", str(args.continual_lr)], args)
    single = run(Path(args.work_dir) / "single-sick", [
        "--data.tasks", "[" + sick_task() + "]", "--model.trainable", "all", "--model.camtl", NO_CONDITIONING,
        "--train.learning_rate", str(args.single_lr)], args)
    report = {
        "command": "python benchmarks/continual.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "new_task": "sick_e (SICK entailment; train 4,500 pairs, dev = the 500 trial pairs)",
        "steps": args.steps, "global_batch": continual["global_batch_size"],
        "continual": {"sick_e": continual["tasks"]["sick_e"], "parameters_trained": continual["parameters"],
                      "wall_time_s": continual["wall_time_s"]},
        "single_task": {"sick_e": single["tasks"]["sick_e"], "parameters_trained": single["parameters"],
                        "wall_time_s": single["wall_time_s"]},
        "old_tasks_before": {t: before["tasks"][t] for t in GLUE_TASKS},
        "old_tasks_after": {t: continual["tasks"][t] for t in GLUE_TASKS},
        "old_tasks_identical": all(before["tasks"][t] == continual["tasks"][t] for t in GLUE_TASKS),
        "old_tasks_max_metric_difference": max_metric_difference(before["tasks"], continual["tasks"]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("continual", "single_task", "old_tasks_identical",
                                             "old_tasks_max_metric_difference")}, indent=1))
    return report


if __name__ == "__main__":
    main()
