"""The many-task recipe (configs/many_tasks.yaml): a few steps end to end on real rows and the real MiniLM, the
leakage filter inside the data loading, per-task budgets, and MT-Uncertainty's scoring cost against the task count."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

import train
from camtl.build import clean_splits, resolve_tasks, training_cap
from camtl.config import DataArgs, RunConfig, SamplingArgs
from camtl.sampling import make_sampler

REPO = Path(__file__).resolve().parents[1]
EXTRA = REPO.parent / "shared" / "data" / "extra"
RECIPE = REPO / "configs" / "many_tasks.yaml"
TEN = ["cola", "sst2", "mrpc", "stsb", "rte", "snli", "sick_e", "qnli_dev", "sick_r", "mr"]


def run(args: list[str]) -> dict:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return train.train(train.parse_config(args, exit_on_error=False), command_line="train.py " + shlex.join(args))


@pytest.mark.parametrize("num_tasks", [5, 10, 17])
def test_uncertainty_scoring_cost_does_not_grow_with_the_task_count(num_tasks: int) -> None:
    """Under the default allocation (proportional) each step scores the candidates of the batch's one task: 2 x 32
    rows, with 5, 10 or 17 tasks. (The paper's entropy allocation scores 32 per task: 160, 320, 544.)"""
    recipe = train.parse_config(["--config", str(RECIPE)], exit_on_error=False).sampling
    assert (recipe.strategy, recipe.allocation, recipe.candidates_per_task) == ("uncertainty", "proportional", None)
    sizes = [int(n) for n in np.random.default_rng(0).integers(250, 16000, num_tasks)]
    scored: list[int] = []

    def scorer(candidates):
        scored.append(len(candidates))
        return [((row * 7919) % 101) / 101 for _, row in candidates]

    sampler = make_sampler("uncertainty", sizes, 32, seed=1, allocation="proportional")
    for _ in range(30):
        assert len(sampler.next_batch(scorer)) == 32
    assert scored == [64] * 30
    paper = make_sampler("uncertainty", sizes, 32, seed=1, allocation="entropy")
    scored.clear()
    paper.next_batch(scorer)
    assert scored == [32 * num_tasks]  # what the default avoids


def test_protected_tasks_and_budgets() -> None:
    """A donor run (MR alone) with SST-2's dev set protected loses the MR lines that hold SST-2 dev sentences; a
    budget caps a task's rows after the filter."""
    cfg = RunConfig(
        data=DataArgs(
            tasks=["mr"],
            data_dir=str(REPO.parent / "shared" / "data" / "glue"),
            extra_dir=str(EXTRA),
            protected_tasks=["sst2"],
        ),
        sampling=SamplingArgs(task_budgets={"mr": 500}),
    )
    tasks = resolve_tasks(cfg)
    clean, dev, leakage = clean_splits(cfg, tasks, [0])
    assert sorted(dev) == ["mr", "sst2"]
    assert set(leakage["mr"]["dropped"]) == {"sst2"} and 700 < leakage["mr"]["dropped"]["sst2"] < 760
    assert len(clean["mr"]) == 9660 - leakage["mr"]["dropped"]["sst2"]
    assert training_cap(cfg, "mr") == 500 and training_cap(cfg, "sst2") is None


def test_recipe_runs_a_few_steps_on_ten_tasks(tmp_path: Path) -> None:
    args = [
        "--config",
        str(RECIPE),
        "--output_dir",
        str(tmp_path / "run"),
        "--data.max_train_rows",
        "16",
        "--data.max_eval_rows",
        "16",
        "--data.max_length",
        "32",
        "--train.batch_size",
        "8",
        "--train.max_steps",
        "3",
        "--train.eval_every",
        "0",
        "--train.save_every",
        "0",
        "--train.report_to",
        "none",
        "--train.mixed_precision",
        "no",
        "--sampling.task_budgets",
        "{snli: 12}",
    ]
    results = run(args)
    assert list(results["tasks"]) == TEN and results["steps"] == 3
    assert all("main" in m for m in results["tasks"].values())
    leakage = results["leakage"]
    assert 700 < leakage["mr"]["dropped"]["sst2"] < 760 and leakage["mr"]["kept"] == 16
    assert leakage["snli"]["kept"] == 12 and leakage["rte"]["dropped"] == {}
    assert results["data_fraction"]["total_rows"]["snli"] == 12
    with pytest.raises(ValueError, match=r"sampling.task_budgets names \['trec'\], which are not in data.tasks"):
        run(args + ["--sampling.task_budgets", "{trec: 10}", "--overwrite_output_dir", "true"])
