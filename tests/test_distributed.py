"""Two CPU processes (gloo, ``accelerate launch``) with the same global batch as one process (per-process batch
halved) reach the same losses, evaluations and data fraction, with MT-Uncertainty's mixed-task batches, even when
the two-process run is stopped by a SIGTERM to one of its ranks and resumed.

fp32 in both runs (bf16 rounding flips near-tied uncertainty scores, so the runs would train on other rows). Dropout
is off in both runs: each process draws its own dropout masks, so with dropout the runs are equal
only in distribution. Everything else (task sampling, candidate scoring, the loss of the global batch) is the
same computation split in two.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

import train

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(glue_dir, out, batch_size):
    return [
        "--output_dir",
        str(out),
        "--data.data_dir",
        str(glue_dir),
        "--data.tasks",
        "[cola, stsb, rte]",
        "--data.max_train_rows",
        "32",
        "--data.max_eval_rows",
        "32",
        "--data.max_length",
        "64",
        "--train.batch_size",
        str(batch_size),
        "--train.eval_batch_size",
        "32",
        "--train.learning_rate",
        "3e-4",
        "--train.max_steps",
        "6",
        "--train.eval_every",
        "3",
        "--train.save_every",
        "3",
        "--train.log_every",
        "1",
        "--train.report_to",
        "none",
        "--train.mixed_precision",
        "no",
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",  # mixed-task batches
        "--model.camtl",
        "{hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
    ]


def launch(glue_dir, out, *extra) -> list[str]:
    """The two-process CPU launch of train.py on ``args(glue_dir, out, 4)`` plus ``extra``."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "train.py",
        *args(glue_dir, out, 4),
        *extra,
    ]


def stop_rank_1_with_sigterm(command, env) -> tuple[int, str]:
    """Launch ``command``; once training starts, SIGTERM to rank 1 only (a preemption notice that reached one
    process). Returns the launcher's exit status and stderr."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "process(es)" in line:  # rank 0's summary, logged just before the first step
            workers = psutil.Process(proc.pid).children(recursive=True)
            rank_1 = [w for w in workers if w.environ().get("RANK") == "1"]
            assert len(rank_1) == 1, [(w.pid, w.environ().get("RANK")) for w in workers]
            rank_1[0].send_signal(signal.SIGTERM)
            break
    stderr = "".join(lines) + proc.stderr.read()
    return proc.wait(timeout=540), stderr


def test_two_processes_match_one_process(glue_dir, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # other tests of this process may have used bf16
    one = train.train(train.parse_config(args(glue_dir, tmp_path / "one", 8), exit_on_error=False))

    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "two"
    status, stderr = stop_rank_1_with_sigterm(launch(glue_dir, out), env)
    stopped = re.search(
        r"Stopped by SIGTERM after step (\d+) of 6; checkpoint (\S+)\. Resume with: accelerate launch "
        r"<your launch options: 2 processes> train\.py (.+)\n",
        stderr,
    )
    assert stopped, stderr[-4000:]
    # no traceback from the run; the launcher then reports its workers' status 143 (128 + SIGTERM) as a failure
    assert "Traceback" not in stderr[: stopped.end()] and status != 0
    step = int(stopped[1])  # both ranks stopped after the same step: one checkpoint, with both ranks' RNG states
    assert 1 <= step < 6 and Path(stopped[2]) == out / "checkpoints" / f"checkpoint-{step}"
    assert json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())["step"] == step
    assert {f.name for f in Path(stopped[2]).glob("torch_rng_*.pt")} == {"torch_rng_0.pt", "torch_rng_1.pt"}
    resume_args = shlex.split(stopped[3])
    assert resume_args == args(glue_dir, out, 4) + ["--resume_from_checkpoint", "latest"]

    proc = subprocess.run(
        launch(glue_dir, out, *resume_args[-2:]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((out / "results.json").read_text())
    assert two["resumed_exactly"] is True

    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 8
    np.testing.assert_allclose(
        [e["loss"] for e in two["loss_history"]], [e["loss"] for e in one["loss_history"]], atol=1e-4, rtol=1e-4
    )
    for got, want in zip(two["eval_history"], one["eval_history"]):
        assert got["metrics"]["average"] == pytest.approx(want["metrics"]["average"], abs=1e-3)
    assert two["data_fraction"] == one["data_fraction"]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["checkpoint-6"]
    assert {f.name for f in (tmp_path / "two" / "checkpoints" / "checkpoint-6").glob("torch_rng_*.pt")} == {
        "torch_rng_0.pt",
        "torch_rng_1.pt",
    }


def test_gradient_aggregation_and_loss_weighting_two_processes_match_one(glue_dir, tmp_path):
    """PCGrad over the per-task gradients averaged across the processes, with uncertainty weighting (its
    log-variances outside the DDP model): two processes take the steps one process takes (issue 27)."""
    from accelerate.state import AcceleratorState

    from tests.camtl_fixtures import tiny_checkpoint

    def toolbox(out, batch_size):
        return [
            *args(glue_dir, out, batch_size),
            "--model.base_model",
            str(tiny_checkpoint().parent / "bert"),
            "--data.max_length",
            "32",
            "--train.max_steps",
            "3",
            "--train.eval_every",
            "0",
            "--train.save_every",
            "3",
            "--sampling.strategy",
            "mixed",
            "--sampling.allocation",
            "proportional",
            "--train.learning_rate",
            "1e-3",
            "--train.gradient_aggregation",
            "pcgrad",
            "--train.loss_weighting",
            "uncertainty",
        ]

    AcceleratorState._reset_state(reset_partial_state=False)
    one = train.train(train.parse_config(toolbox(tmp_path / "one", 8), exit_on_error=False))
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "train.py",
        *toolbox(tmp_path / "two", 4),
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and two["global_batch_size"] == one["global_batch_size"] == 8
    assert [len(e["tasks"]) for e in two["loss_history"]] == [3, 3, 3]  # every task in every step
    np.testing.assert_allclose(
        [e["loss"] for e in two["loss_history"]], [e["loss"] for e in one["loss_history"]], atol=1e-5, rtol=1e-5
    )
    import torch

    def log_vars(run):
        state = torch.load(
            tmp_path / run / "checkpoints" / "checkpoint-3" / "custom_checkpoint_1.pkl", weights_only=True
        )
        return torch.stack([torch.as_tensor(v) for k, v in sorted(state.items()) if k.startswith("log_vars.")])

    assert log_vars("one").abs().min() > 0  # trained
    torch.testing.assert_close(log_vars("two"), log_vars("one"), atol=1e-6, rtol=1e-5)
