"""Weights files that cannot be read: name the file and say what to do.

safetensors reports a file cut short (a save or download that did not finish) as ``SafetensorError: Error while
deserializing header: incomplete metadata, file not fully covered``, naming no file. Loads of our checkpoints and base
models go through `naming_damaged_weights`, which finds the damaged file and raises `DamagedWeightsError` instead:

    with naming_damaged_weights(folder):
        model = CaMtlForMultiTask.from_pretrained(folder)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open


class DamagedWeightsError(ValueError):
    """A weights file is damaged or incomplete; the message names it."""


def safetensors_files(source: str | os.PathLike) -> list[Path]:
    """The ``.safetensors`` files ``source`` loads from: the file itself, a folder's, or a Hub id's cached copy."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.glob("*.safetensors"))
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(str(source), "model.safetensors")
    except ValueError:  # not shaped like a Hub id
        return []
    return [Path(cached)] if isinstance(cached, str) else []


def damaged_files(source: str | os.PathLike) -> dict[Path, str]:
    """``{file: safetensors' complaint}`` for each weights file of ``source`` whose header does not read."""
    damaged = {}
    for file in safetensors_files(source):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            damaged[file] = str(error)
    return damaged


def damaged_weights_message(source: str | os.PathLike, error: BaseException) -> str:
    """One sentence naming the damaged file(s) of ``source`` and what to do."""
    found = damaged_files(source) or {Path(source): str(error)}
    names = "; ".join(f"{file} ({complaint})" for file, complaint in found.items())
    return (
        f"Damaged or incomplete weights file: {names}. It was probably cut short while being written or "
        "downloaded: save it again, or delete it and download it again."
    )


@contextmanager
def naming_damaged_weights(source: str | os.PathLike) -> Iterator[None]:
    """Inside the block, a safetensors read error of ``source``'s weights becomes a `DamagedWeightsError`."""
    try:
        yield
    except SafetensorError as error:
        raise DamagedWeightsError(damaged_weights_message(source, error)) from error
