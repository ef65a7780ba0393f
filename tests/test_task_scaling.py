"""benchmarks/task_scaling.py: the auxiliary tasks' own fine-tunes train on the rows the multi-task runs train on, and
the benchmark's bookkeeping (which runs an arm stands for, what is skipped, the table) on fake training results."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import task_scaling as ts


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def fake_proto() -> dict:
    tasks = ts.TASK_SETS["glue10"]
    aux = {t: 100 + i for i, t in enumerate(tasks[5:])}
    steps = {**dict.fromkeys(ts.TASKS, 10), **{t: -(-n * ts.AUX_PASSES // ts.BATCH) for t, n in aux.items()}}
    return {"sets": {"glue10": {"tasks": tasks, "aux_rows": aux, "steps": steps, "total_steps": sum(steps.values())}}}


def test_aux_single_args_protect_the_whole_set_and_keep_the_steps() -> None:
    proto = fake_proto()
    args = ts.aux_single_args("sick_e", "glue10", 43, proto)
    assert flag(args, "--data.tasks") == "[sick_e]"
    assert flag(args, "--data.protected_tasks") == "[" + ", ".join(ts.TASK_SETS["glue10"]) + "]"
    assert flag(args, "--train.max_steps") == str(proto["sets"]["glue10"]["steps"]["sick_e"])
    assert flag(args, "--train.seed") == "43"
    assert args[: len(ts.CONVERGED_ARMS["single-task"])] == ts.CONVERGED_ARMS["single-task"]  # no conditioning
    with pytest.raises(ValueError, match=r"'rte' is not an auxiliary task of glue10.*sick_e"):
        ts.aux_single_args("rte", "glue10", 42, proto)


def test_aux_single_trains_on_the_rows_of_the_multi_task_run() -> None:
    """SICK-E loses the pairs that share a sentence with STS-B dev in the ten-task runs; its own fine-tune must lose
    them too (protecting only its own dev set keeps all 4,500)."""
    args = ts.aux_single_args("sick_e", "glue10", 42, fake_proto())
    protected = flag(args, "--data.protected_tasks").strip("[]").split(", ")
    alone = ts.aux_rows(["sick_e"], protected=protected)["sick_e"]
    assert alone == ts.aux_rows(ts.TASK_SETS["glue10"])["sick_e"] < ts.aux_rows(["sick_e"])["sick_e"] == 4500


def fake_result(tasks: list[str], score: float) -> dict:
    return {
        "steps": 7,
        "tasks": {t: {"main": score} for t in tasks},
        "parameters": {"trainable": 1},
        "examples_trained": 224,
        "wall_time_s": 60.0,
    }


def test_aux_single_arm_runs_each_auxiliary_task_once_and_tabulates(tmp_path, monkeypatch) -> None:
    proto = fake_proto()
    monkeypatch.setattr(ts, "protocol", lambda sets: proto)
    calls = []

    def run_train(out_dir, extra, args, save_every=0):
        task = flag(extra, "--data.tasks").strip("[]")
        calls.append(task)
        return fake_result([task], 0.5 + len(calls) / 100)

    monkeypatch.setattr(ts, "run_train", run_train)
    argv = ["--arms", "aux-single", "--seeds", "42", "--out", str(tmp_path / "ts.json"), "--work_dir", str(tmp_path)]
    ts.main(argv)
    assert calls == ts.TASK_SETS["glue10"][5:]
    ts.main(argv)  # every record is on file: nothing runs again
    assert len(calls) == 5
    results = json.loads((tmp_path / "ts.json").read_text())
    assert {(r["arm"], r["target"], r["kind"]) for r in results["runs"]} == {
        ("aux-single", t, "single-task") for t in ts.TASK_SETS["glue10"][5:]
    }
    assert results["aux_single"]["glue10"]["snli"]["score"]["mean"] == pytest.approx(0.51)
    table = (tmp_path / "ts.md").read_text()
    assert "Auxiliary tasks of glue10" in table and "| snli | 1 | 7 | 51.0 | 1 min |" in table
    assert "glue10/aux-single" not in results["summary"]  # not a multi-task row of the curve
    assert len(results["commands"]) == 1  # the second call resumed the same command: recorded once


def test_table_puts_the_auxiliary_tasks_in_rows_of_their_own() -> None:
    """GLUE-5 in the main table; each auxiliary task a row of its own, a column per multi-task row that has it (the
    18-task set would otherwise need 13 more columns), blank where a set does not train it."""

    def run(set_name: str, score: float) -> dict:
        record = fake_result(ts.TASK_SETS[set_name], score)
        return {**record, "set": set_name, "arm": "camtl", "kind": "multi-task", "seed": 42, "glue_average": score}

    runs = [run("glue10", 0.5), run("all", 0.6)]
    table = ts.markdown({"summary": ts.summarise(runs), "runs": runs})
    main = table.split("\n\n")[0]
    assert main.startswith("| set / arm | seeds | cola | sst2 | mrpc | stsb | rte | **GLUE-5 avg** | steps | wall |")
    assert "| glue10/camtl | 1 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | **50.0** | 7 | 1 min |" in main
    assert "snli" not in main and "trec" not in main
    assert "| task | glue10/camtl | all/camtl |" in table
    assert "| snli | 50.0 | 60.0 |" in table
    assert "| trec |  | 60.0 |" in table  # only the 18-task set trains TREC
    aux = ts.TASK_SETS["all"][len(ts.TASKS) :]
    assert [line.split(" | ")[0][2:] for line in table.splitlines()[-len(aux) :]] == aux  # each once, in set order


def test_aux_single_runs_only_the_auxiliary_tasks_asked_for(tmp_path, capsys) -> None:
    """``--aux_tasks`` keeps the fine-tunes a larger set adds and nothing else; a task outside the set is refused with
    the set's auxiliary tasks named, before anything is recorded."""
    args = argparse.Namespace(sets=["glue10"], aux_tasks=["mr", "snli"])
    assert ts.run_keys("aux-single", 42, args, fake_proto()) == [
        ("glue10", "aux-single", 42, "snli"),
        ("glue10", "aux-single", 42, "mr"),
    ]
    args.aux_tasks = None
    assert [k[3] for k in ts.run_keys("aux-single", 42, args, fake_proto())] == ts.TASK_SETS["glue10"][5:]
    out = tmp_path / "ts.json"
    with pytest.raises(SystemExit):
        ts.main(["--arms", "aux-single", "--aux_tasks", "trec", "mr", "--out", str(out), "--work_dir", str(tmp_path)])
    assert "--aux_tasks trec: not in glue10; its auxiliary tasks: snli, sick_e, qnli_dev, sick_r, mr" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_a_resumed_run_counts_its_training_time_over_resumes() -> None:
    """A run resumed from a checkpoint: the script's clock saw only the last piece, train.py's ``wall_time_s`` adds the
    pieces up; the table takes the larger, as the converged table does."""
    record = fake_result(ts.TASK_SETS["glue10"], 0.5)
    run = {**record, "set": "glue10", "arm": "plain-mtl", "kind": "multi-task", "seed": 42, "glue_average": 0.5}
    run.update(wall_time_s=600.0, train_wall_time_s=900.0)
    table = ts.markdown({"summary": ts.summarise([run]), "runs": [run]})
    assert "| glue10/plain-mtl | 1 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | **50.0** | 7 | 15 min |" in table
