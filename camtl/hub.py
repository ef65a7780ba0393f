"""Publish a CA-MTL checkpoint and its demo Space on the Hugging Face Hub.

    python -m camtl.hub model outputs/quickstart you/camtl-glue [--private] [--dry-run]
    python -m camtl.hub space you/camtl-glue-demo --model you/camtl-glue [--private] [--dry-run]
    # the project's default model, bundled in the Space:
    python -m camtl.hub space you/camtl-demo [--private] [--dry-run]

The token comes from ``--token``, ``$HF_TOKEN`` or ``hf auth login``; ``$HF_ENDPOINT`` names another Hub endpoint.
Everything goes through ``huggingface_hub.HfApi`` (``create_repo`` + ``upload_folder``).

Nothing local changes: what is uploaded is completed and checked in a temporary copy (`staged_model`: the model
card, the pipeline file of an older checkpoint), before any request. ``--dry-run`` lists what would be uploaded, with
sizes, and makes no request; a Hub that cannot be reached or refuses the upload is one line (`PublishError`).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard, SpaceCardData, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .paths import repository_file

MODEL_ENV = "CAMTL_MODEL"  # what app.py reads to find its model
BUNDLED_MODEL = "model"  # the Space's folder holding the default model, when no model repository is named
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForSequenceClassification")
#: Top-level files that stay home: training state (sub-folders such as checkpoints/ and logs/ never go either).
SKIPPED_FILES = (
    "*.pt",
    "*.pth",
    "*.bin",
    "*.pyc",
    ".*",
    "optimizer*",
    "scheduler*",
    "rng_state*",
    "trainer_state.json",
    "sampler_state*",
)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------
#: What a failed request raises: the Hub's refusal (``HfHubHTTPError``), or the HTTP client's own errors (connection
#: refused, name not resolved, time-outs: the base class ``HfHubHTTPError`` shares with them) and ``OSError``.
NETWORK_ERRORS = (OSError, *HfHubHTTPError.__bases__)
NOTHING_CHANGED = "no file was uploaded and no local file changed"


class PublishError(ConnectionError):
    """The Hub could not be reached or refused a request; the message (one line) says which and what to do."""


def check_model_folder(folder, shown_as=None) -> None:
    """Raise ``ValueError`` listing everything a Hub user would miss in ``folder`` (named ``shown_as`` in the message):
    config with ``auto_map`` for the three auto classes and the code files it names, the pipeline file, weights,
    tokenizer, model card."""
    folder = Path(folder)
    problems = []
    config = {}
    if not (folder / "config.json").is_file():
        problems.append("config.json is missing (save the model with save_pretrained)")
    else:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        auto_map = config.get("auto_map") or {}
        missing_auto = [c for c in AUTO_CLASSES if c not in auto_map]
        if missing_auto:
            problems.append(
                f"config.json auto_map lacks {missing_auto}: the model would not load with trust_remote_code=True"
            )
        impls = list(auto_map.values()) + [p.get("impl", "") for p in (config.get("custom_pipelines") or {}).values()]
        for module in sorted({ref.split(".")[0] for ref in impls if ref}):
            if not (folder / f"{module}.py").is_file():
                problems.append(f"{module}.py (named by config.json) is missing")
        if not config.get("custom_pipelines"):
            problems.append("config.json has no custom_pipelines entry (see modeling_camtl.pipeline_camtl)")
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        problems.append("model.safetensors is missing")
    if not (folder / "tokenizer_config.json").is_file() or not any(
        (folder / f).is_file() for f in ("tokenizer.json", "vocab.txt")
    ):
        problems.append("the tokenizer is missing (tokenizer_config.json and tokenizer.json or vocab.txt)")
    if not (folder / "README.md").is_file():
        problems.append(
            "README.md (the model card) is missing: write it with camtl.model_card.write_model_card "
            "(push_model does when the folder holds results.json)"
        )
    if problems:
        raise ValueError(f"{shown_as or folder} is not ready for the Hub:\n- " + "\n- ".join(problems))


def model_files(folder) -> list[str]:
    """The files :func:`push_model` uploads: the folder's top-level files but training state."""
    return sorted(
        p.name
        for p in Path(folder).iterdir()
        if p.is_file() and not any(fnmatch(p.name, pattern) for pattern in SKIPPED_FILES)
    )


def prepare_model_folder(folder, repo_id: str | None = None, write_card: bool = True) -> None:
    """Add what a checkpoint saved by an older version lacks: the pipeline file (and its ``custom_pipelines`` entry),
    and, when ``folder/results.json`` exists, the model card with ``repo_id`` in its snippets (an existing
    ``README.md`` is kept when ``write_card`` is False)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if config_file.is_file() and not json.loads(config_file.read_text(encoding="utf-8")).get("custom_pipelines"):
        from modeling_camtl.pipeline_camtl import save_pipeline_files  # imports transformers: only when needed

        save_pipeline_files(folder)
    card_wanted = write_card or not (folder / "README.md").is_file()
    if card_wanted and (folder / "results.json").is_file() and config_file.is_file():
        from camtl.model_card import write_model_card

        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        training_config = {}
        if (folder / "training_config.yaml").is_file():
            import yaml

            training_config = yaml.safe_load((folder / "training_config.yaml").read_text(encoding="utf-8")) or {}
        write_model_card(folder, results, None, training_config, repo_id=repo_id)


@contextmanager
def staged_model(folder, repo_id: str, write_card: bool = True) -> Iterator[Path]:
    """A temporary folder holding what :func:`push_model` uploads: ``folder``'s :func:`model_files` (weights linked,
    the rest copied), completed by :func:`prepare_model_folder` and checked by :func:`check_model_folder`
    (``ValueError``). ``folder`` itself is never changed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give the checkpoint folder (e.g. outputs/quickstart).")
    with tempfile.TemporaryDirectory(prefix="camtl-upload-") as tmp:
        staged = Path(tmp)
        for name in model_files(folder):
            if name.endswith(".safetensors"):  # large and never rewritten: linked, not copied
                os.symlink((folder / name).resolve(), staged / name)
            else:
                shutil.copy2(folder / name, staged / name)
        prepare_model_folder(staged, repo_id, write_card)
        check_model_folder(staged, shown_as=folder)
        yield staged


def upload_list(staged, folder=None) -> list[tuple[str, int, str]]:
    """``(file, size in bytes, note)`` for each file of a staged upload; the note says which files the staging added
    to or rewrote in ``folder``'s version."""
    rows = []
    for name in model_files(staged):
        path, original = Path(staged) / name, Path(folder) / name if folder is not None else None
        note = ""
        if original is not None and not original.is_file():
            note = "added for the upload"
        elif original is not None and not path.is_symlink() and path.read_bytes() != original.read_bytes():
            note = "rewritten for the upload"
        rows.append((name, path.stat().st_size, note))
    return rows


@contextmanager
def hub_requests(endpoint: str | None = None) -> Iterator[None]:
    """Inside the block, a Hub that cannot be reached or refuses a request raises a one-line `PublishError`."""
    where = endpoint or constants.ENDPOINT
    try:
        yield
    except OfflineModeIsEnabled as e:
        raise PublishError(
            f"HF_HUB_OFFLINE is set, so the Hub cannot be reached: {NOTHING_CHANGED}. Unset "
            "HF_HUB_OFFLINE to publish; --dry-run checks the folder without the network."
        ) from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "no status"
        reason = str(e).strip().splitlines()[0]
        token = " Check the token (--token, $HF_TOKEN or `hf auth login`)." if status in (401, 403) else ""
        raise PublishError(
            f"The Hub at {where} refused the request ({status}: {reason}): {NOTHING_CHANGED}.{token}"
        ) from e
    except NETWORK_ERRORS as e:
        raise PublishError(
            f"Could not reach the Hub at {where} ({type(e).__name__}: {e}): {NOTHING_CHANGED}. Try "
            "again when online; --dry-run checks the folder without the network."
        ) from e


def push_model(
    folder,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    *,
    write_card: bool = True,
    commit_message: str = "Upload CA-MTL model",
    endpoint: str | None = None,
):
    """Upload a saved CA-MTL checkpoint (weights, remote code, pipeline, tokenizer, card) to ``repo_id``.

    What is uploaded is completed in a temporary copy first (:func:`staged_model`: the card is rewritten from
    ``results.json`` with ``repo_id`` in its usage snippets; ``write_card=False`` keeps an existing one) and checked,
    so nothing is created on the Hub for a folder that would not load there, and ``folder`` is never changed.
    Returns the ``CommitInfo``; `PublishError` when the Hub cannot be reached or refuses.
    """
    with staged_model(folder, repo_id, write_card) as staged, hub_requests(endpoint):
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        return api.upload_folder(
            folder_path=str(staged),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=model_files(staged),
        )


# --------------------------------------------------------------------------------------------------------------------
# Space
# --------------------------------------------------------------------------------------------------------------------
def make_space_folder(folder, model_repo_id: str | None = None, title: str | None = None) -> Path:
    """Write a Gradio Space into ``folder``: ``app.py`` and ``app_examples.json`` (this project's),
    ``requirements.txt`` and a ``README.md`` whose front matter sets ``sdk: gradio`` and ``app_file: app.py``.

    The Space serves ``model_repo_id``, or without one the project's default model, copied into the Space as
    ``model/`` (rebuilt by ``camtl.default_model.ensure_default_model``): the app finds either through the Space
    variable ``CAMTL_MODEL`` (:func:`space_model_variable`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "app_examples.json"):
        shutil.copyfile(repository_file(name, "The Gradio app"), folder / name)
    shutil.copyfile(repository_file("space/requirements.txt", "The Space template"), folder / "requirements.txt")
    if model_repo_id is None:
        from camtl.default_model import BASE_MODEL_ID, ensure_default_model

        shutil.copytree(
            ensure_default_model(), folder / BUNDLED_MODEL, ignore=shutil.ignore_patterns(*SKIPPED_FILES, "__pycache__")
        )
        models, title = [BASE_MODEL_ID], title or "CA-MTL demo: one model, five GLUE tasks"
        about = (
            "the camtl project's default model (CA-MTL on all-MiniLM-L6-v2, trained on five GLUE tasks), "
            f"bundled in `{BUNDLED_MODEL}/`"
        )
    else:
        models, title = [model_repo_id], title or f"CA-MTL demo: {model_repo_id.split('/')[-1]}"
        about = f"[`{model_repo_id}`](https://huggingface.co/{model_repo_id})"
    try:
        sdk_version = version("gradio")
    except PackageNotFoundError:
        sdk_version = None
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        models=models,
        tags=["camtl", "multi-task", "text-classification"],
        emoji="🧭",
        colorFrom="indigo",
        colorTo="blue",
        pinned=False,
        short_description="One CA-MTL model, many text tasks",
    )
    card = SpaceCard(
        f"---\n{card_data.to_yaml()}\n---\n\n# {title}\n\n"
        f"A demo of {about}, a CA-MTL (Conditionally Adaptive Multi-Task Learning, Pilault et al., ICLR 2021) "
        "model: pick a task and classify text, or run every compatible task on one input at once.\n\n"
        f"The app reads the model (a Hub id or a folder of the Space) from the Space variable `{MODEL_ENV}`; set it "
        "to serve another CA-MTL model.\n"
    )
    card.save(folder / "README.md")
    return folder


def space_model_variable(model_repo_id: str | None) -> str:
    """The value of the Space variable ``CAMTL_MODEL``: the model repository, or the bundled folder's name."""
    return model_repo_id or BUNDLED_MODEL


def push_space(
    space_repo_id: str,
    model_repo_id: str | None = None,
    token: str | None = None,
    private: bool = False,
    *,
    title: str | None = None,
    endpoint: str | None = None,
):
    """Create (or update) the Gradio Space ``space_repo_id`` serving ``model_repo_id`` (default: the project's
    default model, bundled in the Space); returns the ``CommitInfo``.

    The Space variable ``CAMTL_MODEL`` points the app at the model repository or the bundled folder."""
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="camtl-space-") as tmp:
        folder = make_space_folder(tmp, model_repo_id, title)  # local: a missing default model is not a network error
        with hub_requests(endpoint):
            return _upload_space(api, folder, space_repo_id, model_repo_id, private)


def _upload_space(api, folder: Path, space_repo_id: str, model_repo_id: str | None, private: bool):
    """The network part of `push_space`."""
    api.create_repo(space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.add_space_variable(
        space_repo_id,
        MODEL_ENV,
        space_model_variable(model_repo_id),
        description="Hub id or folder of the CA-MTL model that app.py serves",
    )
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=space_repo_id,
        repo_type="space",
        commit_message=f"CA-MTL demo for {model_repo_id or 'the default model'}",
    )


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camtl.hub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="upload a saved CA-MTL checkpoint folder")
    model.add_argument("folder", help="the checkpoint folder (save_pretrained output, e.g. outputs/quickstart)")
    model.add_argument("repo_id", help="model repository, e.g. you/camtl-glue")
    model.add_argument(
        "--keep-card",
        action="store_true",
        help="keep an existing README.md as it is (default: rewrite it from results.json)",
    )
    space = commands.add_parser("space", help="create the Gradio demo Space for a model repository")
    space.add_argument("space_repo_id", help="Space repository, e.g. you/camtl-glue-demo")
    space.add_argument(
        "--model",
        default=None,
        dest="model_repo_id",
        help="the model repository it serves (default: the project's default model, bundled)",
    )
    space.add_argument("--title", default=None, help="the Space's title")
    for sub in (model, space):
        sub.add_argument("--private", action="store_true", help="create the repository private")
        sub.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN or the saved login)")
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="list what would be uploaded, with sizes; change nothing and make no request",
        )
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            print_dry_run(args)
            return 0
        if args.command == "model":
            info = push_model(args.folder, args.repo_id, args.token, args.private, write_card=not args.keep_card)
        else:
            info = push_space(args.space_repo_id, args.model_repo_id, args.token, args.private, title=args.title)
    except (ValueError, FileNotFoundError) as e:  # an incomplete folder; no default model to bundle
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(info.commit_url)
    return 0


def print_dry_run(args) -> None:
    """What ``main`` would upload for ``args``, staged as for real (ValueError for a folder not ready), one file a
    line with its size."""
    if args.command == "model":
        repo, kind = args.repo_id, "model"
        with staged_model(args.folder, args.repo_id, write_card=not args.keep_card) as staged:
            rows = upload_list(staged, args.folder)
    else:
        repo, kind = args.space_repo_id, "Space"
        with tempfile.TemporaryDirectory(prefix="camtl-space-") as tmp:
            rows = upload_list(make_space_folder(tmp, args.model_repo_id, args.title))
    print(
        f"Dry run: would upload {len(rows)} files ({sum(r[1] for r in rows):,} bytes) to the "
        f"{'private' if args.private else 'public'} {kind} repository {repo} at {constants.ENDPOINT}:"
    )
    width = max(len(r[0]) for r in rows)
    for name, size, note in rows:
        print(f"  {name:<{width}}  {size:>13,} bytes" + (f"  ({note})" if note else ""))
    print("Nothing was uploaded and no local file changed.")


if __name__ == "__main__":
    sys.exit(main())
