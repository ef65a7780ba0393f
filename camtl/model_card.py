"""Write a CA-MTL checkpoint's model card (its ``README.md``) from the training results.

The text comes from the Jinja2 template ``model_card.md`` at the project root; the Hub metadata (YAML front matter,
including ``model-index`` with every task's dev metrics) is built by ``huggingface_hub.ModelCardData``.

    from camtl.model_card import write_model_card
    write_model_card("outputs/quickstart", results, model.config, training_config)

``results`` is the dict that ``results.json`` holds::

    {"tasks": {"sst2": {"accuracy": 0.91, "main": 0.91}, "stsb": {"pearson": 0.86, "spearmanr": 0.85, "main": 0.855}},
     "average": 0.88, "data_fraction": 0.1, "parameters": {"total": 23_000_000, "trainable": 12_000_000},
     "wall_time_s": 812.5, "steps": 3000}

Every key is optional but ``tasks``. ``data_fraction`` may also be a dict: ``{task: fraction}``, or train.py's
``{"overall": f, "per_task": {task: f}, ...}``. ``eval_rows`` (``{task: dev rows}``) sizes the dev sets in the text.
``comparison`` (written by ``camtl.default_model.export_delta`` from a benchmark's results) puts the checkpoint beside
its recipe's mean over seeds and the baselines measured at the same budget. Other keys (``eval_history``,
``loss_history``...) are ignored.

What the card claims:
- ``model-index`` names GLUE's ``validation`` split only for results on the full dev sets. A model evaluated on a
  sample (the bundled ``data/sample/glue``, or ``data.max_eval_rows``) says "sample" and names no split.
- A user task (not a GLUE name) has no Hub dataset to point to: it stays out of ``model-index`` and appears in the
  text under the user's name for it.
- No absolute local path: folders inside the project are shown relative to it, others by their last component.
"""

import json
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .paths import PROJECT_ROOT, repository_file

SAMPLE_DATA = PROJECT_ROOT / "data" / "sample"  # the bundled GLUE sample (quick start, tests)
GLUE_DATASET = "nyu-mll/glue"

#: Licences of the data sets (from the notes of the staged GLUE copy; each data set keeps its own terms).
DATA_LICENCES = {
    "cola": ("GLUE CoLA", "free for research use (no formal licence)"),
    "sst2": ("GLUE SST-2 (Stanford Sentiment Treebank)", "research use (licence unspecified)"),
    "mrpc": ("GLUE MRPC", "Microsoft Research Paraphrase Corpus licence (check before redistributing)"),
    "stsb": ("GLUE STS-B", "mixed sources, see the STS-B LICENSE.txt"),
    "qnli": ("GLUE QNLI (from SQuAD)", "CC BY-SA 4.0"),
    "rte": ("GLUE RTE (PASCAL RTE 1-3, 5)", "research use"),
    "wnli": ("GLUE WNLI (Winograd Schema)", "CC BY 4.0"),
    "mnli": ("GLUE MNLI (MultiNLI)", "OANC and other permissive licences (see the MultiNLI data page)"),
    "qqp": ("GLUE QQP (Quora Question Pairs)", "Quora's terms of service (non-commercial use)"),
    "sick": ("SICK", "CC BY-NC-SA 3.0"),
    "snli": ("SNLI", "CC BY-SA 4.0"),
    "trec": ("TREC (Li & Roth)", "research use"),
    "boolq": ("SuperGLUE BoolQ", "CC BY-SA 3.0"),
    "cb": ("SuperGLUE CB", "research use"),
    "copa": ("SuperGLUE COPA", "BSD-2-Clause"),
    "wic": ("SuperGLUE WiC", "CC BY-NC 4.0"),
    "wsc": ("SuperGLUE WSC", "CC BY 4.0"),
}
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qnli", "rte", "wnli", "mnli", "qqp")
#: Hub metric ids of the metric names the training code reports.
METRIC_TYPES = {
    "acc": "accuracy",
    "mcc": "matthews_correlation",
    "matthews": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
    "f1_score": "f1",
}
#: Licences of base models we know (the card's ``license`` when none is given).
BASE_MODEL_LICENCES = {
    "sentence-transformers/all-MiniLM-L6-v2": "apache-2.0",
    "google-bert/bert-base-uncased": "apache-2.0",
    "bert-base-uncased": "apache-2.0",
}
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")

CITATION = r"""@inproceedings{pilault2021conditionally,
  title         = {Conditionally Adaptive Multi-Task Learning: Improving Transfer Learning in {NLP} Using Fewer
                   Parameters \& Less Data},
  author        = {Pilault, Jonathan and El hattami, Amine and Pal, Christopher},
  booktitle     = {International Conference on Learning Representations (ICLR)},
  year          = {2021},
  eprint        = {2009.09139},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2009.09139}
}"""
SAMPLE_TEXT = "A warm, funny and beautifully acted film."
SAMPLE_PAIR = ("A woman is reading a book in the park.", "A woman is outdoors.")


def write_model_card(
    folder,
    results: dict,
    config=None,
    training_config: dict | None = None,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Render the card for the checkpoint in ``folder`` and write it as ``folder/README.md``; return its path.

    Args:
        folder: the saved checkpoint (``save_pretrained`` output).
        results: the training results (see the module docstring); ``results["tasks"]`` gives the dev metrics.
        config: the model's config (a ``CaMtlConfig`` or a dict); default: ``folder/config.json``.
        training_config: the training settings (``training_config.yaml``), shown as the recipe.
        repo_id: Hub id used in the usage snippets (default: the folder's path).
        base_model: Hub id of the BERT the model started from (default: read from ``training_config``).
        license: the card's licence id (default: the base model's, when known).
        model_name: the card's title.
    """
    card = build_model_card(
        results,
        _config_dict(folder, config),
        training_config or {},
        repo_id=repo_id or public_path(folder),
        base_model=base_model,
        license=license,
        model_name=model_name,
    )
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def build_model_card(
    results: dict,
    config: dict,
    training_config: dict,
    *,
    repo_id: str,
    base_model: str | None = None,
    license: str | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """The filled ``ModelCard`` (see :func:`write_model_card`)."""
    tasks = config.get("tasks") or []
    if not tasks:
        raise ValueError("config has no tasks: is this a CA-MTL config (config.json of a saved CA-MTL model)?")
    task_results = results.get("tasks") or {}
    unknown = sorted(set(task_results) - {t["name"] for t in tasks})
    if unknown:
        raise ValueError(
            f"results name task(s) {unknown} that the model does not have (its tasks: {[t['name'] for t in tasks]})"
        )
    base_model = base_model or _base_model(training_config, config)
    if base_model:  # show the Hub id where the training config names a local copy of the base model
        training_config = _replace_strings(training_config, _base_model_paths(training_config), base_model)
    evaluation = _evaluation(training_config, results)
    training_config = public_paths(training_config)
    license = license or BASE_MODEL_LICENCES.get(base_model)
    model_name = model_name or (
        repo_id.rstrip("/").split("/")[-1] if _HUB_ID.match(repo_id) else "CA-MTL multi-task model"
    )
    glue = any(t["name"] in GLUE_TASKS for t in tasks)
    card_data = ModelCardData(
        model_name=model_name,
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["camtl", "multi-task", "custom_code", "text-classification"] + (["glue"] if glue else []),
        base_model=base_model,
        datasets=[GLUE_DATASET] if glue else None,
        eval_results=_eval_results(tasks, task_results, evaluation) or None,
    )
    fraction = _data_fraction(results.get("data_fraction"))
    return ModelCard.from_template(
        card_data,
        template_path=str(repository_file("model_card.md", "The model card template")),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        tasks=[_task_row(t, task_results.get(t["name"], {})) for t in tasks],
        average=_fmt(results["average"]) if results.get("average") is not None else None,
        comparison=_comparison(results, [t["name"] for t in tasks]),
        data_fraction=fraction,
        evaluation=evaluation["text"],
        usage_examples=_usage_examples(tasks),
        recipe=_recipe(training_config, results, fraction),
        training_config_yaml=_yaml(training_config),
        parameters=[(k, f"{v:,}" if isinstance(v, int) else v) for k, v in (results.get("parameters") or {}).items()],
        max_tokens=config.get("max_position_embeddings", 512),
        citation=CITATION,
    )


# ----- pieces of the card -----
def _config_dict(folder, config) -> dict:
    if config is None:
        with open(Path(folder) / "config.json", encoding="utf-8") as f:
            return json.load(f)
    return config if isinstance(config, dict) else config.to_dict()


def _base_model(training_config: dict, config: dict) -> str | None:
    """A Hub id for the base model, from the training settings (top level or one section down, e.g.
    ``model.base_model``); a local copy of a known model maps to its Hub id."""
    keys = ("base_model", "model_name_or_path", "model", "bert")
    sections = [training_config] + [v for v in training_config.values() if isinstance(v, dict)]
    candidates = [section.get(k) for section in sections for k in keys]
    for value in candidates + [config.get("_name_or_path")]:
        if not isinstance(value, str) or not value:
            continue
        if re.search(r"all[-_]minilm[-_]l6[-_]v2", value, flags=re.IGNORECASE):
            return "sentence-transformers/all-MiniLM-L6-v2"
        if _HUB_ID.match(value) and not os.path.exists(value):
            return value
    return None


def _base_model_paths(training_config: dict) -> set:
    sections = [training_config] + [v for v in training_config.values() if isinstance(v, dict)]
    return {
        v
        for section in sections
        for k, v in section.items()
        if k in ("base_model", "model_name_or_path", "model", "bert")
        and isinstance(v, str)
        and os.sep in v
        and not _HUB_ID.match(v)
    }


def _replace_strings(value, old: set, new: str):
    if isinstance(value, dict):
        return {k: _replace_strings(v, old, new) for k, v in value.items()}
    return new if isinstance(value, str) and value in old else value


def _metric_type(name: str) -> str:
    key = name.lower()
    return METRIC_TYPES.get(key, METRIC_TYPES.get(key.split("_")[0], key))


def _eval_results(tasks: list, task_results: dict, evaluation: dict) -> list:
    """model-index entries: GLUE tasks only (a user task has no Hub dataset id); the split is named only for results
    on the full dev sets, a sample says so in the dataset's name."""
    out = []
    for t in tasks:
        if t["name"] not in GLUE_TASKS:
            continue
        split = "validation_matched" if t["name"] == "mnli" else "validation"
        name = f"GLUE {t['name'].upper()}"
        if evaluation["sample"]:
            rows = evaluation["rows"].get(t["name"])
            name += f" ({rows}-row sample of the dev set)" if rows else " (sample of the dev set)"
            split = None
        for metric, value in task_results.get(t["name"], {}).items():
            if metric == "main" or not isinstance(value, (int, float)):
                continue
            out.append(
                EvalResult(
                    task_type="text-classification",
                    task_name=f"{t['name']} ({t['kind']})",
                    dataset_type=GLUE_DATASET,
                    dataset_name=name,
                    dataset_config=t["name"],
                    dataset_split=split,
                    metric_type=_metric_type(metric),
                    metric_name=metric,
                    metric_value=round(float(value), 4),
                )
            )
    return out


def _evaluation(training_config: dict, results: dict) -> dict:
    """Which dev data the results come from: ``{"sample": bool, "rows": {task: n}, "text": sentence for the card}``.
    A sample is the bundled ``data/sample`` or any run with ``data.max_eval_rows`` set."""
    data = training_config.get("data") if isinstance(training_config.get("data"), dict) else {}
    data_dir = data.get("data_dir")
    in_sample = isinstance(data_dir, str) and _inside(_resolve(data_dir), SAMPLE_DATA)
    sample = in_sample or data.get("max_eval_rows") is not None
    rows = {k: v for k, v in (results.get("eval_rows") or {}).items() if isinstance(v, int)}
    counts = sorted(set(rows.values()))
    size = (
        (f"{counts[0]:,} rows per task" if len(counts) == 1 else "; ".join(f"{k} {v:,} rows" for k, v in rows.items()))
        if rows
        else ""
    )
    if not sample:
        text = "Dev results are measured on each task's full validation split" + (f" ({size})" if size else "")
    else:
        where = f"the bundled sample `{public_path(data_dir)}`" if in_sample else "a random subset"
        text = (
            f"Dev results are measured on a **sample** of each task's validation split ({where}"
            + (f", {size}" if size else "")
            + "): too few rows to compare models or to trust the scores"
        )
    return {"sample": sample, "rows": rows, "text": text}


def public_path(path) -> str:
    """A path as a published card shows it: relative to the project when inside it, else its last component
    (``/home/me/data/glue`` -> ``glue``); a relative path as given."""
    path = str(path)
    if not os.path.isabs(path):
        return path
    resolved = _resolve(path)
    if _inside(resolved, PROJECT_ROOT):
        return resolved.relative_to(PROJECT_ROOT).as_posix() or "."
    return resolved.name or path


def public_paths(value):
    """``value`` (nested dicts and lists) with every absolute path replaced by :func:`public_path`."""
    if isinstance(value, dict):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_paths(v) for v in value]
    return public_path(value) if isinstance(value, str) and os.path.isabs(value) else value


def _resolve(path: str) -> Path:
    """``path`` made absolute: from the working directory when it exists there, else from the project root."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (PROJECT_ROOT / candidate).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _comparison(results: dict, tasks: list[str]) -> dict | None:
    """The card's "How it compares" table from ``results["comparison"]``: ``{"note", "source", "tasks", "rows"}``,
    each row ``{"name", "seeds", "cells", "average", "serve"}`` (means over seeds ± their standard deviation)."""
    comparison = results.get("comparison")
    if not comparison:
        return None

    def spread(value) -> str:
        if value is None:
            return ""
        if isinstance(value, dict):
            return f"{value['mean']:.3f}" + (f" ± {value['std']:.3f}" if value.get("std") else "")
        return f"{value:.3f}"

    this = {
        "name": "**this checkpoint**",
        "seeds": "1",
        "average": f"**{spread(results.get('average'))}**",
        "cells": [spread((results.get("tasks") or {}).get(t, {}).get("main")) for t in tasks],
        "serve": f"{total:,}" if (total := (results.get("parameters") or {}).get("total")) else "",
    }
    rows = [this]
    for row in comparison["rows"]:
        rows.append(
            {
                "name": row["name"],
                "seeds": str(len(row["seeds"])),
                "average": spread(row["average"]),
                "cells": [spread((row["tasks"] or {}).get(t)) for t in tasks],
                "serve": f"{row['parameters_to_serve_all']:,}" if row.get("parameters_to_serve_all") else "",
            }
        )
    majority = results.get("majority_class")
    if majority:
        rows.append(
            {
                "name": "majority class (every row answered with the most common label)",
                "seeds": "",
                "average": spread(majority.get("average")),
                "serve": "",
                "cells": [spread((majority.get("tasks") or {}).get(t, {}).get("main")) for t in tasks],
            }
        )
    return {"note": comparison.get("note", ""), "source": comparison.get("source", ""), "tasks": tasks, "rows": rows}


def _task_row(task: dict, metrics: dict) -> dict:
    if task["kind"] == "regression":
        labels = "score in [{:g}, {:g}]".format(*task.get("label_range", [0, 1]))
    else:
        labels = ", ".join(f"`{label}`" for label in task["labels"])
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "main") or "not evaluated"
    dataset, licence = DATA_LICENCES.get(
        task["name"], (f"`{task['name']}` (user-provided data)", "see the data's own licence")
    )
    return {
        "name": task["name"],
        "kind": task["kind"],
        "inputs": " + ".join(task["text_fields"]),
        "labels": labels,
        "metrics": shown,
        "dataset": dataset,
        "licence": licence,
    }


def _usage_examples(tasks: list) -> list:
    """Snippets for one single-text task and one pair task (those the sample texts fit best, else the first)."""
    out = []
    for pair, preferred in ((False, ("sst2",)), (True, ("mnli", "rte", "snli", "stsb"))):
        fitting = [t for t in tasks if (len(t["text_fields"]) == 2) == pair]
        if not fitting:
            continue
        task = next((t for name in preferred for t in fitting if t["name"] == name), fitting[0])
        name = json.dumps(task["name"])
        if pair:
            text, text_pair = (json.dumps(s) for s in SAMPLE_PAIR)
            out.append(
                {
                    "name": task["name"],
                    "input": f'{{"text": {text}, "text_pair": {text_pair}}}',
                    "dict_input": f'{{"text": {text}, "text_pair": {text_pair}, "task_name": {name}}}',
                    "tokenizer_args": f"{text}, {text_pair}",
                }
            )
        else:
            text = json.dumps(SAMPLE_TEXT)
            out.append(
                {
                    "name": task["name"],
                    "input": text,
                    "tokenizer_args": text,
                    "dict_input": f'{{"text": {text}, "task_name": {name}}}',
                }
            )
    return out


def _data_fraction(fraction) -> str | None:
    if fraction is None:
        return None
    if isinstance(fraction, dict):
        per_task = fraction.get("per_task", fraction if "overall" not in fraction else {})
        parts = ", ".join(f"{name} {float(f):.0%}" for name, f in per_task.items())
        if "overall" not in fraction:
            return f"per task: {parts}"
        overall = f"{float(fraction['overall']):.0%} of the training rows"
        return f"{overall} ({parts})" if parts else overall
    fraction = float(fraction)
    return "the full training sets" if fraction >= 1 else f"{fraction:.0%} of each task's training set"


def _recipe(training_config: dict, results: dict, fraction: str | None) -> list:
    """``(setting, value)`` rows: the training config's scalars (one level of nesting flattened) and the run's
    steps, wall time and data fraction."""
    rows = []
    for key, value in training_config.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
                v = ", ".join(map(str, v))
            if v is None or isinstance(v, (str, int, float, bool)):
                rows.append((f"{key}.{sub}" if sub else key, f"`{v}`"))
    if results.get("steps") is not None:
        rows.append(("optimisation steps", f"{results['steps']:,}"))
    if results.get("wall_time_s") is not None:
        seconds = float(results["wall_time_s"])
        rows.append(("wall time", f"{seconds:,.0f} s ({seconds / 60:.1f} min)"))
    if fraction:
        rows.append(("data used", fraction))
    return rows


def _yaml(training_config: dict) -> str:
    if not training_config:
        return ""
    import yaml

    plain = json.loads(json.dumps(training_config, default=str))  # paths, enums... as strings
    return yaml.safe_dump(plain, sort_keys=False).rstrip()


__all__ = ["build_model_card", "public_path", "public_paths", "write_model_card"]
