"""A run's output folder: its checkpoints (save, load, list, resume) and its model folders (best, final).


Layout of an output folder (``RunConfig.output_dir``):

* the final model (``config.json``, ``model.safetensors``, remote-code files, tokenizer): the best
  evaluation by average dev score (``train.final_model: best``, the default) or the last step's
  weights (``last``); load it with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``;
* ``training_config.yaml`` (the resolved configuration) and ``results.json``;
* ``best/``: the best model so far, while training runs (its files move into the folder at the end);
* ``checkpoints/checkpoint-<step>/``: resumable states (``accelerator.save_state`` plus
  ``trainer_state.json``, ``sampler.pt`` and each process's ``torch_rng_<rank>.pt``), written to a
  temporary folder and renamed, so a finished checkpoint is never half-written;
* ``logs/``: TensorBoard event files (``logging_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import RunConfig, config_differences, config_to_dict
from .sampling import TaskSampler

CHECKPOINTS_DIR, BEST_DIR = "checkpoints", "best"
CONFIG_FILE, RESULTS_FILE, STATE_FILE, SAMPLER_FILE = (
    "training_config.yaml",
    "results.json",
    "trainer_state.json",
    "sampler.pt",
)


def checkpoint_step(path: str | os.PathLike) -> int:
    return int(Path(path).name.rsplit("-", 1)[1])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("checkpoint-")
        and p.name.rsplit("-", 1)[1].isdigit()
        and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(cfg: RunConfig) -> Path | None:
    """The checkpoint to resume from (None: start afresh); FileNotFoundError for a missing one."""
    wanted = cfg.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted == "latest":
        found = list_checkpoints(cfg.output_dir)
        return found[-1] if found else None
    path = Path(wanted)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint {wanted!r} is not a checkpoint folder (no {STATE_FILE}); "
            f"give 'latest' or one of {[str(p) for p in list_checkpoints(cfg.output_dir)]}."
        )
    return path


def check_output_dir(cfg: RunConfig) -> None:
    """Refuse an output folder that holds another run (unless overwriting), this run without resume/overwrite, or the
    model that ``model.init_from`` continues from."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a folder.")
    if cfg.model.init_from is not None and out.resolve() == Path(cfg.model.init_from).resolve():
        raise ValueError(
            f"output_dir {str(out)!r} is the folder of model.init_from: the run would replace the model "
            "it continues from. Choose another --output_dir."
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        if cfg.overwrite_output_dir:
            return
        raise ValueError(
            f"output_dir {str(out)!r} is not empty and holds no {CONFIG_FILE}: it is not a camtl run. "
            "Choose another --output_dir, or pass --overwrite_output_dir true to write into it anyway."
        )
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"Could not read {saved_path}: {e}") from e
    diffs = config_differences(saved or {}, config_to_dict(cfg))
    if diffs and (cfg.resume_from_checkpoint is not None or not cfg.overwrite_output_dir):
        shown = "\n  ".join(diffs[:8]) + ("\n  ..." if len(diffs) > 8 else "")
        action = (
            "A checkpoint resumes only the run that wrote it: drop --resume_from_checkpoint to replace that run"
            if cfg.resume_from_checkpoint is not None
            else "Pass --overwrite_output_dir true to replace it"
        )
        raise ValueError(
            f"output_dir {str(out)!r} already holds a DIFFERENT run ({CONFIG_FILE} differs):\n  {shown}\n"
            f"Choose another --output_dir, or delete that folder. {action}."
        )
    if cfg.resume_from_checkpoint is None and not cfg.overwrite_output_dir:
        done = "finished" if (out / RESULTS_FILE).is_file() else "unfinished"
        ckpts = [p.name for p in list_checkpoints(out)]
        raise ValueError(
            f"output_dir {str(out)!r} already holds this run ({done}; checkpoints: {ckpts or 'none'}). "
            "Pass --resume_from_checkpoint latest to continue it, or --overwrite_output_dir true to "
            "start it again."
        )


def clear_previous_run(output_dir: str | os.PathLike) -> None:
    """Before an overwrite: remove the old run's checkpoints, best model and results (main process)."""
    out = Path(output_dir)
    for name in (CHECKPOINTS_DIR, BEST_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / RESULTS_FILE).unlink(missing_ok=True)


def remove_unfinished_saves(output_dir: str | os.PathLike) -> None:
    """Remove the temporary folders of saves that a killed run left unfinished (main process)."""
    out = Path(output_dir)
    for folder in [
        *out.glob(".tmp-*"),
        *out.glob(".old-*"),
        *out.glob(f"{CHECKPOINTS_DIR}/.tmp-*"),
        *out.glob(f"{CHECKPOINTS_DIR}/.old-*"),
    ]:
        shutil.rmtree(folder, ignore_errors=True)


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    trainer_state: dict[str, Any],
    sampler: TaskSampler,
    total_limit: int | None,
) -> Path:
    """Save a resumable checkpoint at ``checkpoints/checkpoint-<step>`` (every process must call it).

    Written into ``.tmp-checkpoint-<step>`` then renamed; older checkpoints beyond ``total_limit`` are removed.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    final, tmp = root / f"checkpoint-{step}", root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(torch.get_rng_state(), tmp / f"torch_rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(sampler.state_dict(), tmp / SAMPLER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = root / f".old-checkpoint-{step}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        if total_limit is not None:
            for stale in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | os.PathLike, sampler: TaskSampler) -> tuple[dict[str, Any], bool]:
    """Restore model, optimizer, scheduler, sampler and RNG states; returns (trainer_state, exact).

    ``exact`` is False when this process has no saved torch RNG state (resuming with more processes
    than the checkpoint was made with): training goes on, with other dropout masks.
    """
    path = Path(path)
    trainer_state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    accelerator.load_state(str(path))
    sampler.load_state_dict(torch.load(path / SAMPLER_FILE, weights_only=True))
    rng_file = path / f"torch_rng_{accelerator.process_index}.pt"
    exact = rng_file.is_file() and trainer_state.get("world_size") == accelerator.num_processes
    if rng_file.is_file():
        # accelerate restores it too, but silently skips a state it cannot read: restore it here, for exactness.
        torch.set_rng_state(torch.load(rng_file, weights_only=True))
    return trainer_state, exact


def save_model(accelerator, model, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """``save_pretrained`` (config, weights, remote code, tokenizer) into ``folder`` atomically (main process)."""
    folder = Path(folder)
    if accelerator.is_main_process:
        tmp = folder.with_name(f".tmp-{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, is_main_process=True)
        if extra is not None:
            (tmp / "best.json").write_text(json.dumps(extra, indent=1), encoding="utf-8")
        old = folder.with_name(f".old-{folder.name}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def publish_model(src: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Move the model files of ``src`` (``best/``) into ``output_dir`` and remove ``src``."""
    src, out = Path(src), Path(output_dir)
    for item in src.iterdir():
        if item.is_file() and item.name != "best.json":
            os.replace(item, out / item.name)
    shutil.rmtree(src, ignore_errors=True)


def drop_stale_best(out: Path, state: dict[str, Any]) -> None:
    """On resume: a best/ model from steps after the checkpoint makes the checkpoint's "best" unreliable.

    If best/ was written after the checkpoint (by the interrupted run), forget the recorded best so the
    next evaluation decides again; with exact resumption that evaluation reproduces the same choice.
    """
    marker = out / BEST_DIR / "best.json"
    best_step = json.loads(marker.read_text())["step"] if marker.is_file() else None
    recorded = state["best"]["step"] if state.get("best") else None
    if best_step != recorded:
        state["best"] = None
