"""camtl.interrupt on its own: what SIGINT and SIGTERM do while a run catches them, and the lines a user is shown.

train.py end to end under a real Ctrl-C (one process) and a SIGTERM to one of two ranks: tests/test_train.py and
tests/test_distributed.py.
"""

import os
import shlex
import signal

import pytest
from accelerate import Accelerator

from camtl.interrupt import StopRequest, resume_command, stopped_at_once_line


def send(signum):
    os.kill(os.getpid(), signum)  # Python runs the handler before the next bytecode of this (main) thread


def test_stop_request_lifecycle(capfd):
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    accelerator = Accelerator(cpu=True)
    with StopRequest() as stop:
        stop.catch()
        assert not stop.agreed(accelerator) and stop.signal_name is None
        send(signal.SIGTERM)
        send(signal.SIGTERM)  # a scheduler may send it more than once: ignored
        assert stop.agreed(accelerator) and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            send(signal.SIGINT)  # Ctrl-C after a stop request: at once
    assert signal.getsignal(signal.SIGINT) is before_int and signal.getsignal(signal.SIGTERM) is before_term
    err = capfd.readouterr().err
    assert err.count("SIGTERM: stopping after this step and a checkpoint") == 1


def test_ctrl_c_announces_itself_once_and_handlers_come_back_however_the_block_ends(capfd):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), StopRequest() as stop:
        stop.catch()
        send(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        raise RuntimeError("the run failed")
    assert signal.getsignal(signal.SIGINT) is before
    assert capfd.readouterr().err.strip() == (
        "SIGINT: stopping after this step and a checkpoint (Ctrl-C again: stop at once, without a checkpoint)"
    )


def test_resume_command_replaces_a_given_checkpoint():
    line = (
        "train.py --config configs/glue.yaml --resume_from_checkpoint out/checkpoints/checkpoint-4 "
        "--data.tasks '[cola, rte]'"
    )
    assert resume_command(line) == (
        "python train.py --config configs/glue.yaml --data.tasks '[cola, rte]' --resume_from_checkpoint latest"
    )
    assert shlex.split(resume_command("train.py --resume_from_checkpoint=latest"))[-2:] == [
        "--resume_from_checkpoint",
        "latest",
    ]
    assert resume_command("train.py", num_processes=2).startswith("accelerate launch ")


def test_stopped_at_once_names_the_newest_checkpoint(tmp_path):
    for step in (4, 8):
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    line = stopped_at_once_line(tmp_path, "train.py --train.max_steps 10")
    assert line == (
        f"Stopped at once by Ctrl-C; the newest checkpoint is {tmp_path}/checkpoints/checkpoint-8 "
        "(step 8). Resume with: python train.py --train.max_steps 10 --resume_from_checkpoint latest"
    )
    assert "starts again from step 0" in stopped_at_once_line(tmp_path / "empty", "train.py")
    assert "before training started" in stopped_at_once_line(tmp_path, "train.py", training_started=False)
