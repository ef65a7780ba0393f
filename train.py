"""Train one CA-MTL model (Pilault, El hattami and Pal, ICLR 2021) on several tasks from a BERT checkpoint.

Quick start (bundled all-MiniLM-L6-v2, the GLUE sample in data/sample/glue, a few minutes on 2 CPU cores):

    python train.py                                   # = python train.py --config configs/quickstart.yaml

The paper's recipe on the full GLUE data, with overrides on the command line:

    python train.py --config configs/glue.yaml --data.data_dir ../shared/data/glue --train.learning_rate 3e-5

Two processes (CPU, gloo) or GPUs, same global batch as one process with batch_size 8:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no --main_process_port 29511 train.py --train.batch_size 4

Resume an interrupted run exactly: ``python train.py <same arguments> --resume_from_checkpoint latest``.
Every option: ``python train.py --help``. This script only parses the configuration (`camtl.config`) and calls
`camtl.trainer.train`, the training loop; the output folder's layout: `camtl.checkpointing`.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

from camtl.build import RunSetupError
from camtl.config import parse_config
from camtl.trainer import train


def main(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line (or ``args``) and train; returns the results."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    cfg = parse_config(args)
    command = " ".join(shlex.quote(a) for a in (["train.py", *args] if args is not None else sys.argv))
    return train(cfg, command_line=command)


def exit_status(results: dict[str, Any]) -> int:
    """0 for a finished run (or one stopped by max_steps_this_run), 128 + the signal's number for one stopped by a
    signal (130 for Ctrl-C, 143 for SIGTERM, as a shell reports a process that the signal ended)."""
    return 128 + signal.Signals[results["signal"]].value if results.get("signal") else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        sys.exit(exit_status(main()))
    except RunSetupError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt as stopped:  # a second Ctrl-C: its message says how to resume
        message = str(stopped)
    print(message, file=sys.stderr)  # after the except block has freed the run (its progress bar is closed)
    sys.exit(128 + signal.SIGINT.value)
