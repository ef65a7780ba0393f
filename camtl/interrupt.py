"""Stop a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (what SLURM and cloud preemption send).

While the training loop runs (`StopRequest.catch` .. `StopRequest.release`), the first signal asks the run to stop:
the current optimizer step finishes, a checkpoint is written, and ``train.py`` exits with one line that gives the
step reached and the command that resumes (`stopped_line`). A second Ctrl-C stops at once (``KeyboardInterrupt``,
reported by `stopped_at_once_line`); further SIGTERMs are ignored (a scheduler may send more than one).

Several processes agree on the request once per step (`StopRequest.agreed`: the largest signal number over the
processes, one small all-gather), so every rank stops after the same step even when only one was signalled.
``accelerate launch`` and ``torchrun`` start each worker in its own session: a terminal's Ctrl-C reaches the launcher,
which forwards it to every worker and kills them 30 s later (``--shutdown_timeout``), so the last step and the
checkpoint must fit in that time.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path

import torch

from .checkpointing import checkpoint_step, list_checkpoints

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESUME_FLAG = "--resume_from_checkpoint"


class StopRequest:
    """The stop request of this process (set by a signal handler) and the one agreed by all processes.

    Use as a context manager around the run (it restores the previous handlers however the run ends) and call
    `catch` where stopping after a step becomes possible."""

    def __init__(self) -> None:
        self.signum = 0  # the first signal this process received (0: none)
        self.agreed_signum = 0  # the request every process agreed on at the last `agreed` call
        self.caught = False  # whether `catch` was called: training had started
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def catch(self) -> StopRequest:
        """From now on SIGINT and SIGTERM ask to stop (main thread only: Python runs handlers there)."""
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        self.caught = True
        return self

    def release(self) -> None:
        """Put the previous handlers back: a signal acts as it did before `catch`."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a checkpoint
                raise KeyboardInterrupt
            return
        self.signum = signum
        if os.environ.get("RANK", "0") == "0":
            again = " (Ctrl-C again: stop at once, without a checkpoint)" if signum == signal.SIGINT else ""
            # os.write, not print: the handler may run while Python is inside a write to stderr (tqdm)
            os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step and a checkpoint{again}\n".encode())

    def agreed(self, accelerator) -> bool:
        """Whether any process was asked to stop (collective: every process calls it at the same step)."""
        signum = self.signum
        if accelerator.num_processes > 1:
            signum = int(accelerator.gather(torch.tensor([signum], device=accelerator.device)).max().item())
        self.agreed_signum = signum
        return bool(signum)

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.agreed_signum).name if self.agreed_signum else None


def resume_command(command_line: str, num_processes: int = 1) -> str:
    """``command_line`` (``train.py ARGS``) with ``--resume_from_checkpoint latest`` in place of any given checkpoint,
    behind ``python`` (one process) or ``accelerate launch`` (several: with the options the run was launched with)."""
    args = shlex.split(command_line)
    script, args = (args[0], args[1:]) if args and args[0].endswith(".py") else ("train.py", args)
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == RESUME_FLAG:
            skip = True
        elif not arg.startswith(RESUME_FLAG + "="):
            kept.append(arg)
    launcher = "python" if num_processes == 1 else f"accelerate launch <your launch options: {num_processes} processes>"
    return " ".join([launcher, shlex.quote(script), *map(shlex.quote, kept), RESUME_FLAG, "latest"])


def stopped_line(
    signal_name: str, step: int, total_steps: int, checkpoint: Path, command_line: str, num_processes: int = 1
) -> str:
    """The line a run stopped by a signal ends with: the step reached, its checkpoint, the command that resumes."""
    return (
        f"Stopped by {signal_name} after step {step} of {total_steps}; checkpoint {checkpoint}. "
        f"Resume with: {resume_command(command_line, num_processes)}"
    )


def stopped_at_once_line(
    output_dir: str | os.PathLike, command_line: str, num_processes: int = 1, training_started: bool = True
) -> str:
    """The line after a second Ctrl-C, or one before training started: the newest checkpoint and how to go on."""
    if not training_started:
        return "Stopped by Ctrl-C before training started. Start it with the same command again."
    found = list_checkpoints(output_dir)
    where = (
        f"the newest checkpoint is {found[-1]} (step {checkpoint_step(found[-1])})"
        if found
        else f"no checkpoint in {output_dir} yet, so it starts again from step 0"
    )
    return f"Stopped at once by Ctrl-C; {where}. Resume with: {resume_command(command_line, num_processes)}"
