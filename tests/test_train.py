"""train.py end to end on real GLUE rows and the real all-MiniLM-L6-v2 (CPU, offline, tiny):

* one MT-Uncertainty run (module fixture): trains, lowers the loss, evaluates, checkpoints, writes the model
  folder, which a fresh process reloads through ``trust_remote_code``;
* a run killed after 6 of 10 steps and resumed from its last checkpoint ends exactly as the fixture run;
* every kind of bad input fails before training, with a message naming the problem and the valid choices.
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
from camtl import trainer
from camtl.checkpointing import check_output_dir, list_checkpoints
from camtl.config import config_to_dict, parse_config, resolve_config
from camtl.metrics import glue_average

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TASKS = ["cola", "stsb", "rte"]  # single sentence / regression / pair with named labels


LR = 5e-4  # peak learning rate of the tiny runs: 10 steps lower every task's training loss


def tiny_args(glue_dir, out, *extra):
    """10 steps of 8 rows over 32 training rows per task, evaluations and checkpoints every 4 steps; MT-Uncertainty
    with the paper's entropy allocation unless ``extra`` chooses a strategy."""
    return [
        "--output_dir",
        str(out),
        "--data.data_dir",
        str(glue_dir),
        "--data.tasks",
        f"[{', '.join(TASKS)}]",
        "--data.max_train_rows",
        "32",
        "--data.max_eval_rows",
        "32",
        "--data.max_length",
        "64",
        "--train.batch_size",
        "8",
        "--train.eval_batch_size",
        "32",
        "--train.learning_rate",
        str(LR),
        "--train.max_steps",
        "10",
        "--train.eval_every",
        "4",
        "--train.save_every",
        "4",
        "--train.save_total_limit",
        "2",
        "--train.log_every",
        "1",
        *([] if "--sampling.strategy" in extra else UNCERTAINTY_ENTROPY),
        *extra,
    ]


#: The paper's mixed-task MT-Uncertainty batches: they exercise the floor and the per-task loss shares.
UNCERTAINTY_ENTROPY = ["--sampling.strategy", "uncertainty", "--sampling.allocation", "entropy"]


def run(args):
    """train.py in this process. Accelerate keeps one mixed-precision setting per process: reset it between runs."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return train.train(train.parse_config(args, exit_on_error=False), command_line="train.py " + shlex.join(args))


@pytest.fixture(scope="module")
def trained(glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    args = tiny_args(glue_dir, out)
    return out, run(args), args


def test_tiny_run_evaluates_and_writes_the_model_folder(trained):
    out, results, _ = trained
    assert results["steps"] == 10 and results["world_size"] == 1 and results["global_batch_size"] == 8
    assert list(results["tasks"]) == TASKS
    assert all("main" in m for m in results["tasks"].values())
    assert results["average"] == pytest.approx(glue_average(results["tasks"]))
    assert [e["step"] for e in results["eval_history"]] == [4, 8, 10]
    best = max(results["eval_history"], key=lambda e: e["metrics"]["average"])  # first of equal maxima
    assert results["final_model_step"] == best["step"] and results["average"] == best["metrics"]["average"]
    fraction = results["data_fraction"]
    assert sum(fraction["used_rows"].values()) <= 10 * 8  # only the trained rows count, not all scored ones
    assert 0 < fraction["overall"] == pytest.approx(sum(fraction["used_rows"].values()) / (3 * 32))
    assert results["parameters"]["trainable"] < results["parameters"]["total"]
    assert results["command_line"].startswith("train.py")
    # the default floor: 8 // (2 * 3) = 1 row of every task per batch; the first 4 steps draw disjoint candidates
    assert results["sampling"] == {
        "strategy": "uncertainty",
        "min_rows_per_task": 1,
        "warmup_steps": 0,
        "regression_scores": "borrow",
        "score_mode": "eval",
        "score_sources": {"stsb": "cola"},  # no mrpc here: the first classification task
        "candidates_per_task": 8,
        "allocation": "entropy",
    }
    assert min(fraction["used_rows"].values()) >= 4
    assert len(results["loss_history"]) == 10 and results["wall_time_s"] > 0
    assert results["eval_rows"] == dict.fromkeys(TASKS, 32)
    majority = results["majority_class"]  # the floor the app compares the model with
    assert list(majority["tasks"]) == TASKS and majority["tasks"]["stsb"]["main"] == 0.0
    assert majority["tasks"]["rte"]["answer"] in ("entailment", "not_entailment")

    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "configuration_camtl.py",
        "modeling_camtl.py",
        "training_config.yaml",
        "results.json",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["average"] == results["average"]
    assert not (out / "best").exists()  # moved into the folder at the end
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-8", "checkpoint-10"]  # save_total_limit 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert list((out / "logs").rglob("events.out.tfevents*"))  # TensorBoard


def test_run_writes_a_monitoring_reference_that_fits_its_model(trained):
    from camtl.monitoring import Reference
    from modeling_camtl import CaMtlForMultiTask

    out, _, _ = trained
    reference = Reference.load(out, CaMtlForMultiTask.from_pretrained(out))  # its fingerprints: the final weights
    assert list(reference.tasks) == TASKS
    assert all(ref.meta["rows"] == 32 and ref.meta["train_max_length"] == 64 for ref in reference.tasks.values())


def test_proportional_allocation_trains_one_task_per_batch_and_counts_passes(glue_dir, tmp_path):
    """--sampling.allocation proportional end to end: one task per batch, its rows the most uncertain of twice the
    batch; results record the allocation, the candidates and every task's trained rows and passes."""
    results = run(
        tiny_args(
            glue_dir,
            tmp_path / "out",
            "--train.report_to",
            "none",
            "--train.eval_every",
            "0",
            "--sampling.allocation",
            "proportional",
        )
    )
    sampling, fraction = results["sampling"], results["data_fraction"]
    assert sampling["allocation"] == "proportional" and sampling["candidates_per_task"] == 16
    assert sampling["min_rows_per_task"] is None  # no floor: every batch is one task
    assert sum(fraction["trained_rows"].values()) == 10 * 8
    assert all(k % 8 == 0 for k in fraction["trained_rows"].values())  # whole batches of one task
    assert fraction["passes"] == {k: fraction["trained_rows"][k] / 32 for k in TASKS}


def test_training_config_is_the_resolved_config_and_reloads(trained):
    out, _, args = trained
    saved = yaml.safe_load((out / "training_config.yaml").read_text())
    assert saved == config_to_dict(resolve_config(train.parse_config(args, exit_on_error=False)))
    assert Path(saved["model"]["base_model"]).is_dir()  # the bundled MiniLM, resolved at run time
    again = train.parse_config(["--config", str(out / "training_config.yaml")], exit_on_error=False)
    assert config_to_dict(resolve_config(again)) == saved


def test_training_lowers_the_loss(trained, glue_dir):
    """Loss on the 96 training rows, per task: the fresh model vs the last step's weights (checkpoint-10)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    out, _, args = trained
    cfg = resolve_config(train.parse_config(args, exit_on_error=False))
    tasks = trainer.resolve_tasks(cfg)
    set_seed(cfg.train.seed)
    model, _ = trainer.build_model(cfg, tasks)
    train_sets, _, collator, _ = trainer.get_dataloaders(cfg, tasks, model.tokenizer, Accelerator(cpu=True))

    def mean_task_loss():
        model.eval()
        with torch.no_grad():
            losses = [model(**collator([ds[i] for i in range(len(ds))])).loss.item() for ds in train_sets]
        return np.array(losses)  # (num_tasks,) mean loss of each task's training rows

    before = mean_task_loss()
    model.load_state_dict(load_file(out / "checkpoints" / "checkpoint-10" / "model.safetensors"))
    after = mean_task_loss()
    assert np.all(after < before) and after.mean() < 0.9 * before.mean(), (before, after)  # 1.41 -> 1.21 here


RELOAD = r"""
import json, sys, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
enc = tok(["The cat sat.", "A man plays a guitar."], ["A man plays music."] * 2, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**enc, task_ids=torch.tensor([0, 1]))
print(json.dumps({"model_type": model.config.model_type, "tasks": model.config.task_names,
                  "modeling_module": type(model).__module__, "encoder": type(encoder).__name__,
                  "logits": out.logits.nan_to_num(neginf=-1e30).tolist()}))
"""


def test_model_folder_reloads_with_remote_code_in_a_fresh_process(trained, tmp_path):
    from transformers import AutoTokenizer

    from modeling_camtl import CaMtlForMultiTask

    out, _, _ = trained
    env = {k: v for k, v in SUBPROCESS_ENV.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )  # cwd outside the repo: modeling_camtl is not importable there
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    assert remote["model_type"] == "camtl" and remote["tasks"] == TASKS
    assert remote["modeling_module"].startswith("transformers_modules") and remote["encoder"] == "CaMtlModel"
    local = CaMtlForMultiTask.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    enc = tok(["The cat sat.", "A man plays a guitar."], ["A man plays music."] * 2, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = local(**enc, task_ids=torch.tensor([0, 1])).logits.nan_to_num(neginf=-1e30)
    np.testing.assert_allclose(remote["logits"], logits.numpy(), atol=1e-5)


def test_resume_after_interruption_ends_exactly_like_the_uninterrupted_run(trained, glue_dir, tmp_path):
    """Killed after step 6 (the last checkpoint is step 4), resumed from 'latest': with dropout on, the same
    losses, evaluations, data fraction and final metrics as the fixture's uninterrupted run."""
    _, reference, _ = trained
    out = tmp_path / "resumed"
    stopped = run(tiny_args(glue_dir, out, "--train.report_to", "none", "--train.max_steps_this_run", "6"))
    assert stopped["interrupted"] and stopped["step"] == 6
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4"] and not (out / "results.json").exists()
    with pytest.raises(ValueError, match="already holds this run.*--resume_from_checkpoint latest"):
        run(tiny_args(glue_dir, out, "--train.report_to", "none"))

    resumed = run(tiny_args(glue_dir, out, "--train.report_to", "none", "--resume_from_checkpoint", "latest"))
    assert_same_run(resumed, reference)


#: A checkpoint's trainer_state.json as camtl wrote it before `trainer.LoopState` (a plain dict): checkpoint-8 of the
#: fixture's run, its histories cut to one entry, a logging window half full.
OLD_TRAINER_STATE = {
    "step": 8,
    "best": {
        "step": 4,
        "metrics": {
            "tasks": {
                "cola": {"mcc": 0.0929, "main": 0.0929},
                "stsb": {"pearson": 0.1129, "spearman": 0.118, "main": 0.1154},
                "rte": {"accuracy": 0.46875, "main": 0.46875},
            },
            "average": 0.2257,
        },
        "data_fraction": 0.3333,
    },
    "eval_history": [
        {
            "step": 4,
            "metrics": {
                "tasks": {
                    "cola": {"mcc": 0.0929, "main": 0.0929},
                    "stsb": {"pearson": 0.1129, "spearman": 0.118, "main": 0.1154},
                    "rte": {"accuracy": 0.46875, "main": 0.46875},
                },
                "average": 0.2257,
            },
            "data_fraction": 0.3333,
        }
    ],
    "loss_history": [
        {"step": 1, "loss": 1.1926, "lr": 0.0005, "tasks": {"cola": 0.6806, "stsb": 2.2034, "rte": 0.6937}}
    ],
    "wall_time_s": 23.08,
    "world_size": 1,
    "global_batch_size": 8,
    "total_steps": 10,
    "window": {"loss": 1.5, "n": 2, "task_sum": [1.4, 3.1, 0.0], "task_n": [2, 2, 0]},
}


def test_a_trainer_state_saved_before_loop_state_loads_and_saves_the_same(trained):
    """Checkpoints written before the loop state was typed load into `LoopState`, and checkpoints keep that layout."""
    import copy

    state = trainer.LoopState.from_dict(copy.deepcopy(OLD_TRAINER_STATE))
    assert state.step == 8 and state.best["step"] == 4 and state.window.task_n == [2, 2, 0]
    assert state.to_dict() == OLD_TRAINER_STATE
    entry = state.close_window(lr=1e-4, names=TASKS)  # the window's mean losses become a log line
    assert entry == {"step": 8, "loss": 0.75, "lr": 1e-4, "tasks": {"cola": 0.7, "stsb": 1.55}}
    assert state.loss_history[-1] is entry and state.window == trainer.LossWindow.empty(3)
    out, _, _ = trained
    saved = json.loads((out / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert list(saved) == list(OLD_TRAINER_STATE) and list(saved["window"]) == list(OLD_TRAINER_STATE["window"])
    assert trainer.LoopState.from_dict(saved).to_dict() == saved
    with pytest.raises(ValueError, match=r"missing keys \['window'\], unknown keys \['windows'\]"):
        trainer.LoopState.from_dict({**{k: v for k, v in saved.items() if k != "window"}, "windows": {}})


def assert_same_run(resumed, reference):
    """A resumed run ended exactly as the uninterrupted one: losses, evaluations, data fraction, final model."""
    assert resumed["resumed_exactly"] is True and resumed["steps"] == reference["steps"]
    np.testing.assert_allclose(
        [e["loss"] for e in resumed["loss_history"]], [e["loss"] for e in reference["loss_history"]], atol=1e-4
    )
    for got, want in zip(resumed["eval_history"], reference["eval_history"], strict=True):
        assert got["step"] == want["step"]
        assert got["metrics"]["average"] == pytest.approx(want["metrics"]["average"], abs=1e-4)
    for task in TASKS:
        for key, value in reference["tasks"][task].items():
            assert resumed["tasks"][task][key] == pytest.approx(value, abs=1e-4), (task, key)
    assert resumed["data_fraction"] == reference["data_fraction"]
    assert resumed["final_model_step"] == reference["final_model_step"]


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_prints_the_resume_command(trained, glue_dir, tmp_path):
    """A real Ctrl-C (SIGINT) to ``python train.py`` as training starts: the step finishes, a checkpoint of it is
    written, the run ends with status 130 and one line (step, checkpoint, the command that resumes), no traceback;
    that exact command then ends exactly as the uninterrupted fixture run."""
    _, reference, _ = trained
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *tiny_args(glue_dir, out, "--train.report_to", "none")],
        cwd=REPO,
        env=SUBPROCESS_ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "process(es)" in line:  # the run's summary, logged just before the first step
            proc.send_signal(signal.SIGINT)
            break
    stderr = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=300) == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "SIGINT: stopping after this step and a checkpoint (Ctrl-C again: stop at once" in stderr
    last = stderr.strip().splitlines()[-1]
    stopped = re.search(
        r"WARNING camtl.train: Stopped by SIGINT after step (\d+) of 10; checkpoint (\S+)\. "
        r"Resume with: (.+)$",
        last,
    )
    assert stopped, last
    step = int(stopped[1])
    assert 1 <= step < 10 and Path(stopped[2]) == out / "checkpoints" / f"checkpoint-{step}"
    assert list_checkpoints(out)[-1] == Path(stopped[2]) and not (out / "results.json").exists()
    command = shlex.split(stopped[3])
    assert command[:2] == ["python", "train.py"] and command[-2:] == ["--resume_from_checkpoint", "latest"]
    assert_same_run(run(command[2:]), reference)


def test_a_second_ctrl_c_stops_at_once(glue_dir, tmp_path, monkeypatch):
    """Two Ctrl-C during the first step: no checkpoint, a KeyboardInterrupt whose message says how to go on
    (``python train.py`` prints it as its one line), and the process's own handlers back afterwards."""
    out = tmp_path / "twice"
    step = trainer._train_step

    def step_and_press_ctrl_c_twice(*args, **kwargs):
        step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trainer, "_train_step", step_and_press_ctrl_c_twice)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run(tiny_args(glue_dir, out, "--train.report_to", "none"))
    assert str(stopped.value) == (
        f"Stopped at once by Ctrl-C; no checkpoint in {out} yet, so it starts again from "
        "step 0. Resume with: python train.py "
        + shlex.join(tiny_args(glue_dir, out, "--train.report_to", "none"))
        + " --resume_from_checkpoint latest"
    )
    assert not list_checkpoints(out) and signal.getsignal(signal.SIGINT) is handler


# ----- bad input: refused before any training ------------------------------------------------------------------------
def _csv(path, rows, header="text,label"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def user_files(tmp_path):
    good = [f"sentence number {i},{'pos' if i % 2 else 'neg'}" for i in range(6)]
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    return {
        "train": _csv(tmp_path / "train.csv", good),
        "dev": _csv(tmp_path / "dev.csv", good[:4]),
        "bad_label": _csv(tmp_path / "bad_label.csv", [*good, "a sentence,maybe"]),
        "garbage": str(tmp_path / "garbage.json"),
    }


def _user_task(train_file, dev_file, **extra):
    task = {
        "name": "mine",
        "train_file": train_file,
        "validation_file": dev_file,
        "text_columns": ["text"],
        "label_column": "label",
        "labels": ["neg", "pos"],
        **extra,
    }
    return json.dumps([task])


BAD_INPUTS = {
    "unknown task": (["--data.tasks", "[cola, colaa]"], r"Unknown task 'colaa'.*known GLUE tasks.*sst2"),
    "missing data folder": (["--data.data_dir", "/nonexistent/glue"], r"'/nonexistent/glue' is not a folder"),
    "task folder without train split": (["--data.tasks", "[qnli]"], r"'qnli', split 'train'.*does not exist"),
    "bad learning rate": (["--train.learning_rate", "-1"], r"train\.learning_rate=-1.*positive"),
    "bad new-parameter rate": (
        ["--train.new_parameters_lr_scale", "0"],
        r"train\.new_parameters_lr_scale=0.*positive number",
    ),
    "bad warmup": (["--train.warmup_ratio", "1.5"], r"train\.warmup_ratio=1\.5.*\[0, 1\)"),
    "bad batch size": (["--train.batch_size", "0"], r"train\.batch_size=0.*positive integer"),
    "bad temperature": (["--sampling.temperature", "0"], r"sampling\.temperature=0.*positive"),
    "negative uncertainty floor": (
        ["--sampling.min_rows_per_task", "-1"],
        r"sampling\.min_rows_per_task=-1.*non-negative integer or null",
    ),
    "uncertainty floor over the batch": (
        ["--sampling.min_rows_per_task", "3"],
        r"min_rows_per_task must be an integer in \[0, batch_size // num_tasks = 2\]",
    ),
    "a floor with proportional allocation": (
        ["--sampling.allocation", "proportional", "--sampling.min_rows_per_task", "1"],
        r"has no floor",
    ),
    "max_length beyond the model": (["--data.max_length", "1024"], r"data\.max_length=1024.*512 positions"),
    "unknown CA-MTL knob": (["--model.camtl", "{adapter_sise: 8}"], r"adapter_sise.*valid CA-MTL knobs.*adapter_size"),
    "resume from a non-checkpoint": (["--resume_from_checkpoint", "/tmp"], r"'/tmp' is not a checkpoint folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_training(case, glue_dir, tmp_path):
    extra, message = BAD_INPUTS[case]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as info:
        run(tiny_args(glue_dir, out, "--train.report_to", "none", *extra))
    assert isinstance(info.value, train.RunSetupError)
    assert not (out / "training_config.yaml").exists() and not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing column", r"missing column\(s\) \['lbl'\].*columns are \['text', 'label'\]"),
        ("unreadable file", r"Could not read .*garbage\.json"),
        ("label outside the declared set", r"row 7: label 'maybe' is not one of \['neg', 'pos'\]"),
    ],
)
def test_bad_user_data_fails_before_training(case, message, user_files, glue_dir, tmp_path):
    tasks = {
        "missing column": _user_task(user_files["train"], user_files["dev"], label_column="lbl"),
        "unreadable file": _user_task(user_files["garbage"], user_files["dev"]),
        "label outside the declared set": _user_task(user_files["bad_label"], user_files["dev"]),
    }[case]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run(tiny_args(glue_dir, out, "--train.report_to", "none", "--data.tasks", tasks))
    assert not (out / "training_config.yaml").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--sampling.strategy", "roundrobin"],
            (
                r"(?s)sampling\.strategy.*'proportional', 'uniform', 'temperature', "
                r"'sequential', 'uncertainty'.*roundrobin"
            ),
        ),
        (["--model.trainable", "some"], r"(?s)model\.trainable.*'paper', 'adapters', 'all'"),
        (["--train.mixed_precision", "fp8"], r"(?s)train\.mixed_precision.*'no', 'bf16', 'fp16'"),
        (["--train.batch_size", "abc"], r"(?s)train\.batch_size.*int.*abc"),
    ],
)
def test_bad_choices_fail_while_parsing(extra, message, glue_dir, tmp_path):
    with pytest.raises(argparse.ArgumentError, match=message):
        train.parse_config(tiny_args(glue_dir, tmp_path, *extra), exit_on_error=False)


def test_a_removed_setting_is_refused_by_name(tmp_path):
    """train.group_by_length was removed (BENCHMARKS.md): on the command line or in a --config file (an old run's
    training_config.yaml) it is refused with the reason, not jsonargparse's bare 'unexpected key'."""
    with pytest.raises(ValueError, match=r"train.group_by_length was removed from camtl: it measured slower"):
        parse_config(["--train.group_by_length", "false"], exit_on_error=False)
    old = tmp_path / "training_config.yaml"
    old.write_text(yaml.safe_dump({"train": {"seed": 1, "group_by_length": False}}))
    with pytest.raises(ValueError, match=r"train.group_by_length was removed"):
        parse_config(["--config", str(old)], exit_on_error=False)
    old.write_text(yaml.safe_dump({"train": {"seed": 1}}))
    assert parse_config([f"--config={old}"], exit_on_error=False).train.seed == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid on a GPU")
def test_fp16_on_cpu_is_refused(glue_dir, tmp_path):
    with pytest.raises(ValueError, match="fp16.*needs a CUDA GPU.*'bf16' or 'no'"):
        run(tiny_args(glue_dir, tmp_path / "out", "--train.mixed_precision", "fp16"))


def test_output_folder_holding_another_run_is_refused(trained, glue_dir, tmp_path):
    _, _, args = trained
    different = r"(?s)DIFFERENT run.*train\.learning_rate: 0\.0005 \(saved\) != 0\.0001 \(now\)"
    with pytest.raises(ValueError, match=different + ".*Pass --overwrite_output_dir true to replace it"):
        run(args + ["--train.learning_rate", "1e-4"])
    with pytest.raises(ValueError, match=different + ".*A checkpoint resumes only the run that wrote it"):
        run(
            args
            + ["--train.learning_rate", "1e-4", "--overwrite_output_dir", "true", "--resume_from_checkpoint", "latest"]
        )
    with pytest.raises(ValueError, match="already holds this run \\(finished.*--overwrite_output_dir true"):
        run(args)
    # with --overwrite_output_dir, the same configuration or another one may start again (checked without training)
    for other in ([], ["--train.learning_rate", "1e-4"]):
        check_output_dir(
            resolve_config(train.parse_config(args + other + ["--overwrite_output_dir", "true"], exit_on_error=False))
        )
    with pytest.raises(ValueError, match="is the folder of model.init_from: the run would replace the model"):
        run(args + ["--model.init_from", args[args.index("--output_dir") + 1], "--overwrite_output_dir", "true"])
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a camtl run"):
        run(tiny_args(glue_dir, stranger))


def test_a_run_shows_one_data_line_one_train_line_and_no_library_noise(tmp_path):
    """The quick start (one step) in a fresh process with an empty datasets cache, as a user's first run: besides
    its own log lines, one progress line for the data and one for training; none of datasets' bars (read, check,
    tokenize each split), transformers' (load, save) or load reports."""
    env = {**SUBPROCESS_ENV, "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--output_dir",
            str(tmp_path / "out"),
            "--train.max_steps",
            "1",
            "--data.max_eval_rows",
            "8",
            "--train.report_to",
            "none",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in re.split(r"[\r\n]+", proc.stdout + proc.stderr) if line.strip()]
    bars = [line for line in lines if re.match(r"^[\w ]+: +\d+%\|", line)]
    assert {line.split(":")[0] for line in bars} == {"data", "train"}, sorted({b.split(":")[0] for b in bars})
    others = [line for line in lines if line not in bars]
    assert others and all(" INFO camtl.train: " in line for line in others), others
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_command_line_error_has_no_traceback(glue_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", *tiny_args(glue_dir, tmp_path / "out", "--data.tasks", "[mnli]")],
        cwd=REPO,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error: GLUE task 'mnli', split 'train'" in proc.stderr and "Traceback" not in proc.stderr


def test_bf16_accumulation_adapters_and_last_model(glue_dir, tmp_path):
    """Other paths in one short run: bf16 autocast, 2-batch gradient accumulation, temperature sampling, only the
    CA-MTL modules and heads trainable, and the last step's weights as the final model."""
    from safetensors.torch import load_file

    out = tmp_path / "other"
    args = tiny_args(
        glue_dir,
        out,
        "--data.tasks",
        "[sst2, stsb, mrpc]",
        "--train.batch_size",
        "4",
        "--train.gradient_accumulation_steps",
        "2",
        "--train.max_steps",
        "4",
        "--train.eval_every",
        "2",
        "--train.save_every",
        "4",
        "--train.mixed_precision",
        "bf16",
        "--sampling.strategy",
        "temperature",
        "--model.trainable",
        "adapters",
        "--train.final_model",
        "last",
        "--train.report_to",
        "none",
    )
    results = run(args)
    assert results["steps"] == 4 and results["examples_trained"] == 4 * 4 * 2
    assert sum(results["data_fraction"]["used_rows"].values()) == 32  # no row twice within a pass
    assert results["mixed_precision"] == "bf16" and results["sampling"]["strategy"] == "temperature"
    assert results["parameters"]["trainable"] < 0.02 * results["parameters"]["total"]
    assert results["final_model"] == "last" and results["final_model_step"] == 4
    final, last = load_file(out / "model.safetensors"), load_file(out / "checkpoints/checkpoint-4/model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in last)
    assert [e["lr"] for e in results["loss_history"]] == pytest.approx([LR, 2 * LR / 3, LR / 3, 0.0])


def test_mixed_precision_auto_resolves_to_what_the_hardware_computes_natively(glue_dir, tmp_path):
    """auto is bf16 exactly where the CPU (AVX512-BF16 or AMX) or the GPU computes bf16 natively; the resolved value
    is what the run records and compares on resume."""
    from camtl.config import native_bf16

    cfg = train.parse_config(tiny_args(glue_dir, tmp_path / "out"), exit_on_error=False)
    assert cfg.train.mixed_precision == "auto"
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    cpu_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    assert native_bf16() == (torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_bf16)
    assert resolve_config(cfg).train.mixed_precision == ("bf16" if native_bf16() else "no")
    explicit = train.parse_config(tiny_args(glue_dir, tmp_path / "out", "--train.mixed_precision", "no"))
    assert resolve_config(explicit).train.mixed_precision == "no"


def test_new_parameters_take_their_own_learning_rate():
    """new_parameters_lr_scale: CA-MTL's modules and the task heads (every parameter not in the pretrained checkpoint)
    train at learning_rate x scale, the pretrained ones at learning_rate, weight decay as before; scale 1 keeps the
    two groups of one rate, so older checkpoints' optimizer states still load."""
    from modeling_camtl import CaMtlForMultiTask, is_camtl_parameter
    from tests.camtl_fixtures import tiny_checkpoint

    model = CaMtlForMultiTask.from_pretrained(str(tiny_checkpoint()))
    model.set_trainable("paper")
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    one = trainer.optimizer_groups(model, 0.01, 1e-4)
    assert [(g["lr"], g["weight_decay"]) for g in one] == [(1e-4, 0.01), (1e-4, 0.0)]
    groups = trainer.optimizer_groups(model, 0.01, 1e-4, new_lr_scale=5.0)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)
    for g in groups:
        names = [trainable[id(p)] for p in g["params"]]
        new = g["lr"] == pytest.approx(5e-4)
        assert new or g["lr"] == 1e-4
        assert all(is_camtl_parameter(n) == new for n in names), names
        assert {n.endswith("bias") or "LayerNorm" in n or "camtl_task.embedding" in n for n in names} == {
            g["weight_decay"] == 0.0
        }
    assert {(g["lr"] == 1e-4, g["weight_decay"]) for g in groups} == {
        (True, 0.01),
        (True, 0.0),
        (False, 0.01),
        (False, 0.0),
    }
    cfg = parse_config(["--config", "configs/quickstart.yaml", "--train.new_parameters_lr_scale", "5"])
    optimizer, _ = trainer.build_optimizer(model, cfg.train, 100)
    assert sorted(g["initial_lr"] / cfg.train.learning_rate for g in optimizer.param_groups) == [1, 1, 5, 5]
