"""CA-MTL demo: one multi-task model answers several questions about text, explained in plain words.

    python app.py                                  # the project's trained default model (camtl.default_model)
    python app.py --model PATH_OR_HUB_ID           # any CA-MTL checkpoint folder or Hub model id
    CAMTL_MODEL=user/camtl-glue python app.py      # the same through the environment (how the Space is pointed)
    python app.py --backend auto                   # ONNX Runtime (int8 only where its dev scores hold): camtl.serving
    python app.py --check-examples [--write]       # run the page's candidate examples through the model

What the page says about the model comes from the model folder's ``results.json`` (train.py writes it, the default
model ships it, and for a Hub id it is fetched from the repository when there is one): each task's dev metrics and
dev-set size, and the majority-class reference (every dev row answered with the training set's most common label,
which train.py records). When the model's dev average is within :data:`NEAR_MAJORITY` of that reference, or more
than half of its tasks each are, the page warns that its answers are close to guesses (a quick-start model, say). A
model without ``results.json`` is served with a note that its quality is unknown. The confidence of an answer is the
normalised entropy of its label probabilities (the model's own ``entropy`` output for that row).

The task descriptions in plain words are :data:`TASK_INFO` (GLUE names; other tasks are shown by their own names
and labels). The examples are ``app_examples.json`` (candidates with their expected answers, checked against a model
with ``--check-examples``).

Tests and notebooks build the page with :func:`build_demo` and launch it themselves; :class:`Predictor` holds the
two plain functions behind it, ``predict(task, text, text_pair)`` and ``predict_all(text, text_pair)``.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no look-ups of outside hosts at launch

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
from safetensors import SafetensorError  # noqa: E402

MODEL_ENV = "CAMTL_MODEL"
EXAMPLES_FILE = Path(__file__).resolve().parent / "app_examples.json"
DEFAULT_MODEL_LABEL = "the project's default model (CA-MTL on all-MiniLM-L6-v2, trained on five GLUE tasks)"
#: Characters refused before tokenizing: far past any model's token limit, cheap to check.
MAX_CHARS = 20_000
EXAMPLES_PER_TASK = 2
#: A task's score, or the average, less than this above the majority-class reference (0.05 = 5 points of 100) is
#: "no better than always giving the most common answer".
NEAR_MAJORITY = 0.05
#: Normalised entropy up to which an answer counts as confident, then as leaning (above: close to a guess).
CONFIDENT, LEANING = 0.5, 0.85
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")

#: The GLUE tasks in plain words: the question each answers and readable names for its labels.
TASK_INFO = {
    "cola": {
        "title": "CoLA",
        "question": "Is this sentence grammatical?",
        "labels": {"unacceptable": "not grammatical", "acceptable": "grammatical"},
    },
    "sst2": {
        "title": "SST-2",
        "question": "Is this movie review positive or negative?",
        "labels": {"negative": "negative", "positive": "positive"},
    },
    "mrpc": {
        "title": "MRPC",
        "question": "Do the two sentences mean the same thing?",
        "labels": {"not_equivalent": "different meaning", "equivalent": "same meaning"},
    },
    "stsb": {"title": "STS-B", "question": "How similar in meaning, 0 (unrelated) to 5 (the same)?"},
    "rte": {
        "title": "RTE",
        "question": "If the first text is true, is the second one true too?",
        "labels": {"entailment": "yes, it follows", "not_entailment": "no, it does not follow"},
    },
    "wnli": {
        "title": "WNLI",
        "question": "If the first text is true, is the second one true too?",
        "labels": {"not_entailment": "no, it does not follow", "entailment": "yes, it follows"},
    },
    "qnli": {
        "title": "QNLI",
        "question": "Does the sentence answer the question?",
        "labels": {"entailment": "it answers it", "not_entailment": "it does not answer it"},
    },
    "mnli": {
        "title": "MNLI",
        "question": "If the premise is true, is the hypothesis true, false or undecided?",
        "labels": {"entailment": "true", "neutral": "undecided", "contradiction": "false"},
    },
    "qqp": {
        "title": "QQP",
        "question": "Do the two questions ask the same thing?",
        "labels": {"not_duplicate": "different questions", "duplicate": "same question"},
    },
}


def refuse(message: str) -> gr.Error:
    """The error for a bad request: its message reaches the page and the API caller; no traceback in the log."""
    return gr.Error(message, title="Cannot run this input", print_exception=False)


class CheckpointNotFoundError(FileNotFoundError):
    """No CA-MTL checkpoint where the app was told to look; the message says how to make or name one."""


# --------------------------------------------------------------------------------------------------------------------
# Finding and loading the model
# --------------------------------------------------------------------------------------------------------------------
def resolve_model(model: str | None = None) -> tuple[str, str]:
    """``(path or Hub id, name shown on the page)`` of the checkpoint to serve: ``model``, else ``$CAMTL_MODEL``,
    else the project's default model (rebuilt on first use). ``CheckpointNotFoundError`` for a folder that does not
    exist or holds no checkpoint, and when no default model ships."""
    model = model or os.environ.get(MODEL_ENV)
    if not model:
        return default_model_folder(), DEFAULT_MODEL_LABEL
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise CheckpointNotFoundError(
                f"{model!r} is a folder but holds no config.json: not a saved checkpoint "
                "(a folder written by model.save_pretrained, e.g. by `python train.py`)."
            )
        return model, model
    if _looks_local(model):
        raise CheckpointNotFoundError(
            f"The folder {model!r} does not exist.{_checkpoints_near(model)} Pass a "
            "checkpoint folder or a Hub model id, or leave --model out for the default "
            "model."
        )
    return model, model


def _looks_local(model: str) -> bool:
    """A path rather than a Hub id: not shaped ``owner/name``, or starting with ``.``, ``/``, ``~``, or whose first
    part is a folder here (``outputs/typo``)."""
    first = model.replace("\\", "/").split("/")[0]
    return not _HUB_ID.match(model) or model.startswith((".", "/", "~")) or os.path.isdir(first)


def _checkpoints_near(model: str) -> str:
    parent = os.path.dirname(os.path.normpath(model)) or "."
    if not os.path.isdir(parent):
        return ""
    found = sorted(p for p in os.listdir(parent) if os.path.isfile(os.path.join(parent, p, "config.json")))
    return f" Checkpoints in {parent}/: {', '.join(found)}." if found else ""


def default_model_folder() -> str:
    """The default model's folder (``camtl.default_model.ensure_default_model``), or ``CheckpointNotFoundError``."""
    try:
        from camtl.default_model import DefaultModelMissingError, ensure_default_model
    except ImportError as err:  # app.py alone (a Space): the model is named by CAMTL_MODEL
        raise CheckpointNotFoundError(
            f"No model named: set {MODEL_ENV} or pass --model PATH_OR_HUB_ID (the "
            "default model needs the camtl package beside app.py)."
        ) from err
    try:
        return str(ensure_default_model())
    except (DefaultModelMissingError, ValueError) as err:
        raise CheckpointNotFoundError(str(err)) from err


def load_pipeline(model_or_path, backend: str = "torch"):
    """A ``CaMtlClassificationPipeline`` for a checkpoint folder, a Hub id or a model object (with ``.tokenizer``).

    The repository's own pipeline class is used when importable (running from the repo); elsewhere (a Space) the
    class that travels with the checkpoint (``pipeline(model=..., trust_remote_code=True)``). A ``backend`` other than
    ``torch`` (``onnx``, ``onnx-int8``, ``auto``: ONNX Runtime, see ``camtl.serving``) needs the camtl package."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Pipeline, pipeline

    if isinstance(model_or_path, Pipeline):
        return model_or_path
    if backend != "torch":
        try:
            from camtl.serving import load_pipeline as load_serving_pipeline
        except ImportError as e:
            raise ValueError(
                f"--backend {backend} runs ONNX Runtime through the camtl package, which is not "
                f"importable here ({e}): install it (pip install -e .) or use --backend torch"
            ) from e
        if not isinstance(model_or_path, str):
            raise ValueError(f"--backend {backend} needs a checkpoint or export folder, not a model object")
        return load_serving_pipeline(model_or_path, backend)
    try:
        from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline
    except ImportError:
        CaMtlClassificationPipeline = None
    if not isinstance(model_or_path, str):  # a model object, e.g. straight from CaMtlForMultiTask.from_bert
        if CaMtlClassificationPipeline is None:
            raise ValueError("A model object needs the modeling_camtl package; pass a checkpoint folder instead")
        return CaMtlClassificationPipeline(model=model_or_path, tokenizer=model_or_path.tokenizer)
    try:
        if CaMtlClassificationPipeline is None:
            return pipeline(model=model_or_path, trust_remote_code=True)
        model = AutoModelForSequenceClassification.from_pretrained(model_or_path, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(model_or_path, trust_remote_code=True)
        return CaMtlClassificationPipeline(model=model, tokenizer=tokenizer)
    except OSError as e:  # a Hub id that cannot be reached, a folder with missing files
        where = "" if os.path.isdir(model_or_path) else " (no such folder here, so it was tried as a Hub model id)"
        raise CheckpointNotFoundError(f"Could not load the CA-MTL checkpoint {model_or_path!r}{where}: {e}") from e
    except SafetensorError as e:  # a weights file cut short
        raise CheckpointNotFoundError(
            f"Could not load the CA-MTL checkpoint {model_or_path!r}: {damaged_weights_message(model_or_path, e)}"
        ) from e


def damaged_weights_message(path: str, error: Exception) -> str:
    """The damaged file named (`camtl.weights`); in a Space, where only this file travels, the error as it is."""
    try:
        from camtl.weights import damaged_weights_message as describe
    except ImportError:
        return f"its weights are damaged or incomplete ({error})"
    return describe(path, error)


def load_results(model_path: str) -> dict:
    """The model's ``results.json`` (folder, or Hub repository when reachable); ``{}`` when it has none."""
    if os.path.isdir(model_path):
        path = os.path.join(model_path, "results.json")
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(model_path, "results.json")
        except Exception:  # offline, no such file, no such repo: the page then says the quality is unknown
            return {}
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------------------------
# Plain words
# --------------------------------------------------------------------------------------------------------------------
def field_label(name: str) -> str:
    """``sentence1`` -> ``Sentence 1``, ``premise`` -> ``Premise``."""
    words = re.sub(r"(?<=[A-Za-z])(\d+)$", r" \1", name.replace("_", " ")).strip()
    return words[:1].upper() + words[1:]


def multi_label_threshold(pipe) -> float:
    """The score at which the pipeline counts a multi-label task's label (its module's ``MULTI_LABEL_THRESHOLD``,
    whether the repository's pipeline or the one travelling with the checkpoint)."""
    return float(getattr(sys.modules.get(type(pipe).__module__), "MULTI_LABEL_THRESHOLD", 0.5))


def task_info(spec: dict) -> dict:
    """``{"title", "question", "labels": {label: readable name}}`` of a task: :data:`TASK_INFO` for GLUE names,
    else the task's own name and labels (underscores as spaces)."""
    info = TASK_INFO.get(spec["name"], {})
    labels = info.get("labels", {})
    return {
        "title": info.get("title", spec["name"]),
        "question": info.get("question", ""),
        "labels": {label: labels.get(label, label.replace("_", " ")) for label in spec.get("labels") or []},
    }


def task_choice(spec: dict) -> str:
    """What the task selector shows: ``CoLA: Is this sentence grammatical?``."""
    info = task_info(spec)
    return f"{info['title']}: {info['question']}" if info["question"] else info["title"]


def confidence(probabilities) -> tuple[float, str]:
    """``(normalised entropy, words)`` of one answer's label probabilities: ``H(p) / log K`` in [0, 1], which is
    the model's own ``entropy`` output for a classification row (0: certain, 1: every label equally likely)."""
    probs = [p for p in probabilities if p > 0]
    k = max(len(probabilities), 2)
    h = min(max(-sum(p * math.log(p) for p in probs) / math.log(k), 0.0), 1.0)
    words = "high" if h <= CONFIDENT else "medium" if h <= LEANING else "low: close to a guess"
    return h, words


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def score_in_words(spec: dict, metrics: dict, rows: int | None = None) -> str:
    """A task's dev score as a visitor reads it: ``right on 88% of 872 dev examples``, ``correlation with human
    ratings 0.85``, ``Matthews correlation 0.45 (0: guessing, 1: always right)``."""
    on = f" of {rows:,} dev examples" if rows else " of its dev examples"
    if "pearson" in metrics:
        return f"correlation with human ratings {metrics['pearson']:.2f} (1: perfect agreement)"
    if "mcc" in metrics:
        return f"Matthews correlation {metrics['mcc']:.2f} (0: no better than guessing, 1: always right)"
    if "f1_micro" in metrics:  # multi-label
        return (
            f"micro-F1 {metrics['f1_micro']:.2f} over its labels (macro-F1 {metrics['f1_macro']:.2f}; every label "
            f"right on {_percent(metrics['subset_accuracy'])}{on})"
        )
    if "f1" in metrics:
        return f"right on {_percent(metrics['accuracy'])}{on} (F1 {metrics['f1']:.2f})"
    if "accuracy" in metrics:
        return f"right on {_percent(metrics['accuracy'])}{on}"
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "main")


def majority_in_words(spec: dict, reference: dict) -> str:
    """What always giving the most common answer scores on the task's dev set."""
    if spec["kind"] == "regression":
        return "a constant guess would correlate 0"
    if spec["kind"] == "multi_label":
        names = [task_info(spec)["labels"].get(a, a) for a in reference.get("answer") or []]
        answer = ", ".join(names) if names else "no label"
        return f'always answering "{answer}" would score micro-F1 {reference.get("f1_micro", reference["main"]):.2f}'
    answer = task_info(spec)["labels"].get(reference.get("answer"), reference.get("answer"))
    if "accuracy" in reference:
        return f'always answering "{answer}" would be right on {_percent(reference["accuracy"])}'
    return f'always answering "{answer}" would score {reference["main"]:.2f}'


def quality_warning(results: dict) -> str | None:
    """The page's warning: no dev results, or answers close to the majority class: a dev average within
    :data:`NEAR_MAJORITY` of the majority-class reference, or more than half of the tasks each within it."""
    tasks = results.get("tasks")
    if not tasks:
        return (
            "**This model's folder holds no dev results (results.json)**: how often its answers are right is unknown."
        )
    majority = results.get("majority_class")
    if not majority or results.get("average") is None:
        return None
    near = [
        name
        for name, metrics in tasks.items()
        if metrics["main"] - majority["tasks"].get(name, {"main": -math.inf})["main"] < NEAR_MAJORITY
    ]
    if results["average"] - majority["average"] >= NEAR_MAJORITY and 2 * len(near) <= len(tasks):
        return None
    return (
        f"**This model's answers are close to guesses.** On {len(near)} of its {len(tasks)} tasks it does no "
        "better than always giving the task's most common answer (dev average "
        f"{results['average']:.2f}; the most common answers: {majority['average']:.2f}). It is probably a "
        "quick-start model (`python train.py`: a few minutes of training on a small sample). Run "
        "`python app.py` without `--model` for the project's trained model."
    )


# --------------------------------------------------------------------------------------------------------------------
# The model behind the page
# --------------------------------------------------------------------------------------------------------------------
class Predictor:
    """The model, loaded once, behind the page's two plain functions."""

    def __init__(self, model_or_path, name: str | None = None, results: dict | None = None, backend: str = "torch"):
        path = None
        if isinstance(model_or_path, str) or model_or_path is None:
            path, resolved_name = resolve_model(model_or_path)
            name = name or resolved_name
        self.pipe = load_pipeline(path if path is not None else model_or_path, backend)
        self.tasks = {t["name"]: t for t in self.pipe.tasks}  # in task-id order
        self.info = {n: task_info(t) for n, t in self.tasks.items()}
        self.max_tokens = self.pipe.max_length
        self.name = name or getattr(self.pipe.model.config, "_name_or_path", "") or "CA-MTL model"
        self.results = results if results is not None else load_results(path) if path else {}
        self.warning = quality_warning(self.results)

    # ----- the plain functions -----
    def predict(self, task: str, text: str, text_pair: str = "") -> tuple[dict | None, float | None, str]:
        """``({answer: probability}, None, confidence)`` for a classification task, ``(None, score, note)`` for a
        regression task, ``({label: score} of the labels reaching the threshold, None, every label's score)`` for a
        multi-label task. Raises ``gr.Error`` (shown in the page, returned through the API) for an unknown task or bad
        text. A single-text task never reads ``text_pair``."""
        spec = self._task(task)
        if spec["kind"] == "multi_label":
            return self._predict_multi_label(spec, self._input(spec, text, text_pair or ""))
        result = self._run([self._input(spec, text, text_pair or "")])[0]
        if spec["kind"] == "regression":
            return None, round(result["score"], 4), "A score, not a choice between answers: no confidence cue."
        labels = self.info[task]["labels"]
        h, words = confidence([r["score"] for r in result])
        note = f"**Confidence: {words}** (uncertainty {h:.2f}, from 0: certain to 1: a pure guess)."
        return {labels[r["label"]]: r["score"] for r in result}, None, note

    def _predict_multi_label(self, spec: dict, model_input: dict) -> tuple[dict, None, str]:
        """A multi-label answer: ``{label: score}`` of every label whose sigmoid reaches the pipeline's threshold (none
        may), and a note with every label's score and the mean binary uncertainty (the model's ``entropy``)."""
        cut = multi_label_threshold(self.pipe)
        everything = self._run([model_input], threshold=0.0)[0]  # every label, most likely first
        labels = self.info[spec["name"]]["labels"]
        chosen = {labels[r["label"]]: r["score"] for r in everything if r["score"] >= cut}
        h = sum(confidence([r["score"], 1 - r["score"]])[0] for r in everything) / len(everything)
        words = "high" if h <= CONFIDENT else "medium" if h <= LEANING else "low: close to a guess"
        found = "" if chosen else f"**No label reaches {_percent(cut)}.** "
        note = (
            f"{found}Several labels may apply; each is shown when its score reaches {_percent(cut)}. Every "
            "label: "
            + ", ".join(f"{labels[r['label']]} {_percent(r['score'])}" for r in everything)
            + f". **Confidence: {words}** (mean uncertainty {h:.2f}, from 0: certain to 1: a pure guess)."
        )
        return chosen, None, note

    def predict_all(self, text: str, text_pair: str = "") -> list[list]:
        """Run every compatible task (pair tasks when ``text_pair`` is given, else single-text tasks) in ONE
        mixed-task batch; one row ``[task, answer, confidence, all answers]`` per task."""
        text_pair = text_pair or ""
        pair = bool(text_pair.strip())
        specs = [t for t in self.tasks.values() if (len(t["text_fields"]) == 2) == pair]
        if not specs:
            raise refuse(
                "This model has no pair tasks: clear the second text to run its single-text tasks."
                if pair
                else "This model has no single-text tasks: give a second text to run its pair tasks."
            )
        results = self._run([self._input(t, text, text_pair) for t in specs])
        rows = []
        for spec, result in zip(specs, results):
            if spec["kind"] == "regression":
                lo, hi = spec["label_range"]
                rows.append(
                    [task_choice(spec), f"{result['score']:.2f} (of {lo:g} to {hi:g})", "", "a score, not a choice"]
                )
            elif spec["kind"] == "multi_label":  # the labels reaching the pipeline's threshold, none possibly
                labels = self.info[spec["name"]]["labels"]
                found = ", ".join(f"{labels[r['label']]} ({_percent(r['score'])})" for r in result)
                rows.append(
                    [
                        task_choice(spec),
                        found or f"no label (none reaches {_percent(multi_label_threshold(self.pipe))})",
                        "",
                        "several labels: each its own score",
                    ]
                )
            else:
                labels = self.info[spec["name"]]["labels"]
                h, words = confidence([r["score"] for r in result])
                rows.append(
                    [
                        task_choice(spec),
                        f"{labels[result[0]['label']]} ({_percent(result[0]['score'])})",
                        f"{words} ({h:.2f})",
                        ", ".join(f"{labels[r['label']]} {_percent(r['score'])}" for r in result),
                    ]
                )
        return rows

    # ----- helpers -----
    def _task(self, task: str) -> dict:
        if task not in self.tasks:
            raise refuse(f"Unknown task {task!r}. This model's tasks: {', '.join(self.tasks)}.")
        return self.tasks[task]

    def _input(self, spec: dict, text: str, text_pair: str) -> dict:
        fields = [field_label(f) for f in spec["text_fields"]]
        for field, value in zip(fields, (text, text_pair)):
            if not isinstance(value, str) or not value.strip():
                raise refuse(
                    f"{field} is empty: task {spec['name']!r} needs "
                    f"{' and '.join(fields) if len(fields) == 2 else 'some text'}."
                )
            if len(value) > MAX_CHARS:
                raise refuse(
                    f"{field} is {len(value):,} characters long; this model reads at most {self.max_tokens} tokens."
                )
        if len(fields) == 2:
            return {"text": text, "text_pair": text_pair, "task_name": spec["name"]}
        return {"text": text, "task_name": spec["name"]}

    def _run(self, inputs: list, **options) -> list:
        """Every input in one forward pass (one batch, mixed tasks); input errors become ``gr.Error``."""
        try:
            return self.pipe(inputs, batch_size=len(inputs), truncation=False, **options)
        except ValueError as e:  # empty text, too many tokens, wrong number of texts
            raise refuse(str(e)) from e

    def describe(self, task: str) -> str:
        """What the task asks, its answers, and how well the model does on its dev set, in plain words."""
        spec, info = self._task(task), self.info[task]
        reads = " and ".join(f"*{field_label(f)}*" for f in spec["text_fields"])
        if spec["kind"] == "regression":
            answers = "a score from {:g} to {:g}".format(*spec["label_range"])
        elif spec["kind"] == "multi_label":
            answers = "any of " + " / ".join(f"*{name}*" for name in info["labels"].values()) + " (several, or none)"
        else:
            answers = " / ".join(f"*{name}*" for name in info["labels"].values())
        line = f"**{task_choice(spec)}** The model reads {reads} and answers {answers}."
        metrics = (self.results.get("tasks") or {}).get(task)
        if not metrics:
            return line + " Its dev score is unknown."
        rows = (self.results.get("eval_rows") or {}).get(task)
        line += f" On data it never trained on: {score_in_words(spec, metrics, rows)}"
        reference = ((self.results.get("majority_class") or {}).get("tasks") or {}).get(task)
        if reference:
            line += f"; {majority_in_words(spec, reference)}"
            if metrics["main"] - reference["main"] < NEAR_MAJORITY:
                line += " (**no better than always giving the most common answer**)"
        alone = self._single_task(task)
        if alone is not None:
            score, lr, seeds = alone
            line += (
                f". A separate model fine-tuned on this task alone scores {score:.2f} on its main dev metric "
                f"(the strongest single-task baseline measured: lr {lr:g}, mean of {seeds} seeds), "
                f"this one {metrics['main']:.2f}"
            )
        return line + "."

    def _single_task(self, task: str) -> tuple[float, float, int] | None:
        """The strongest single-task baseline measured on ``task`` (the highest mean dev score over the single-task
        rows of the results' comparison, e.g. the rates swept per task and one rate for all): ``(mean, lr,
        seeds)``, or None when the results compare with none (the default model's card:
        ``camtl.default_model.benchmark_comparison``)."""
        rows = [
            row
            for row in (self.results.get("comparison") or {}).get("rows", [])
            if str(row.get("arm", "")).startswith("single-task") and task in (row.get("tasks") or {})
        ]
        if not rows:
            return None
        best = max(rows, key=lambda row: float(row["tasks"][task]["mean"]))
        lr = (best.get("lr") or {}).get(task, float("nan"))
        return float(best["tasks"][task]["mean"]), float(lr), len(best.get("seeds") or [])

    def examples(self) -> list[list]:
        """``[task, text, text_pair]`` rows of the page: per task, up to :data:`EXAMPLES_PER_TASK` of its candidates
        in ``app_examples.json`` not marked ``"shown": false`` (a task without any gets a generic example)."""
        stored = read_examples()
        rows = []
        for name, spec in self.tasks.items():
            pair = len(spec["text_fields"]) == 2
            candidates = stored["tasks"].get(name) or stored["generic"][str(len(spec["text_fields"]))]
            fitting = [e for e in candidates if e.get("shown", True) and bool(e.get("text_pair")) == pair]
            rows += [[name, e["text"], e.get("text_pair", "")] for e in fitting[:EXAMPLES_PER_TASK]]
        return rows


def read_examples(path=None) -> dict:
    """``app_examples.json`` (or ``path``)."""
    with open(path or EXAMPLES_FILE, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------------------------
# Checking the examples against a model
# --------------------------------------------------------------------------------------------------------------------
def check_examples(predictor: Predictor, stored: dict) -> list[dict]:
    """Run every candidate with an ``expected`` answer for the model's tasks; one row each with the model's answer,
    its confidence and ``ok`` (the expected label, or a score inside the expected range)."""
    rows = []
    for name, candidates in stored["tasks"].items():
        if name not in predictor.tasks:
            continue
        spec = predictor.tasks[name]
        for example in candidates:
            result = predictor._run([predictor._input(spec, example["text"], example.get("text_pair", ""))])[0]
            if spec["kind"] == "regression":
                lo, hi = example["expected"]
                got, ok, sure = round(result["score"], 2), lo <= result["score"] <= hi, ""
            elif spec["kind"] == "multi_label":  # expected: the list of labels reaching the threshold
                got = sorted(r["label"] for r in result)
                ok, sure = got == sorted(example["expected"]), ""
            else:
                got, ok = result[0]["label"], result[0]["label"] == example["expected"]
                sure = confidence([r["score"] for r in result])[1]
            rows.append({"task": name, "example": example, "got": got, "ok": ok, "confidence": sure})
    return rows


def mark_shown(stored: dict, rows: list[dict], model_name: str) -> dict:
    """``stored`` with ``"shown"`` set on every checked candidate: true for the first :data:`EXAMPLES_PER_TASK`
    per task that the model gets right, false for the others."""
    shown_per_task = {}
    for row in rows:
        count = shown_per_task.get(row["task"], 0)
        row["example"]["shown"] = bool(row["ok"]) and count < EXAMPLES_PER_TASK
        shown_per_task[row["task"]] = count + row["example"]["shown"]
    stored["checked_with"] = {
        "model": model_name,
        "date": datetime.date.today().isoformat(),
        "right": sum(r["ok"] for r in rows),
        "of": len(rows),
    }
    return stored


def report_examples(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        e = row["example"]
        texts = e["text"] + (f" || {e['text_pair']}" if e.get("text_pair") else "")
        lines.append(
            f"{'ok   ' if row['ok'] else 'WRONG'} {row['task']:5} expected {e['expected']!s:15} got "
            f"{row['got']!s:15} {row['confidence']:22} {texts}   [{e.get('why', '')}]"
        )
    right = sum(r["ok"] for r in rows)
    return "\n".join(lines + [f"{right} of {len(rows)} candidates answered as expected"])


# --------------------------------------------------------------------------------------------------------------------
# Monitoring (camtl.monitoring): the Monitoring tab and the flag beside an answer
# --------------------------------------------------------------------------------------------------------------------
STATUS_WORDS = {"ok": "ok", "warn": "warn: worth a look", "alarm": "ALARM: traffic unlike the reference"}


class AppMonitoring:
    """The monitor behind the Monitoring tab: every forward pass of the served model feeds it (forward hooks), so it
    sees the traffic the app has served since it started. ``reference``: a folder holding
    ``monitoring_reference.*`` or a ``camtl.monitoring.Reference``; default: the model folder's own, or the shipped
    one for the default model. Without one (or with a stale one) the tab says why and nothing is monitored."""

    def __init__(self, predictor: Predictor, reference=None, window: int = 200):
        self.monitor, self.note = None, ""
        try:
            from camtl import monitoring
        except ImportError:  # app.py alone (a Space without the package)
            self.note = "Monitoring needs the camtl package beside app.py."
            return
        self.tokenizer = predictor.pipe.tokenizer
        if not hasattr(predictor.pipe.model, "bert"):  # ONNX Runtime (camtl.serving): logits only, no pooled vector
            self.note = (
                "Monitoring needs the torch backend: the reference describes the pooled vector the heads "
                "read, which the ONNX graph does not output. Serve with `--backend torch` to monitor."
            )
            return
        try:
            if not isinstance(reference, monitoring.Reference):
                folder = reference or monitoring.find_reference(predictor.pipe.model.config._name_or_path)
                if folder is None:
                    self.note = (
                        "This model has no monitoring reference: make one with `python -m camtl.monitoring "
                        "build MODEL_FOLDER` (train.py writes one at the end of training)."
                    )
                    return
                reference = monitoring.Reference.load(folder)
            self.monitor = monitoring.Monitor(reference, window=window)
            self.handle = self.monitor.attach(predictor.pipe)  # checks the reference's fingerprints
        except (monitoring.StaleReferenceError, FileNotFoundError, ValueError) as err:
            self.monitor, self.note = None, f"Not monitored: {err}"

    def flag_note(self, task: str, text: str, text_pair: str = "") -> str:
        """The out-of-distribution flag of the answer just given for this input, in words ("" when none is known)."""
        if self.monitor is None or not text:
            return ""
        found = self.monitor.flag_for(task, self.tokenizer(text, text_pair or None)["input_ids"])
        return "" if found is None else found.in_words()

    def table(self) -> list[list]:
        """One row per monitored task: ``[task, status, requests, estimated accuracy, reasons]``."""
        if self.monitor is None:
            return []
        from camtl.monitoring import status_table

        rows = status_table(self.monitor.status())
        return [[row[0], STATUS_WORDS[row[1]], *row[2:]] for row in rows]

    def details(self) -> str:
        """Every test of every task (p-value and effect size) and the most atypical inputs, as Markdown."""
        if self.monitor is None:
            return self.note
        parts = [
            f"Each task's latest {self.monitor.window} requests (of those served since the app started) against "
            "its reference: rows the model did not train on. Alarm: a test's p-value, Bonferroni-corrected over "
            "the tests, below 0.05."
        ]
        for name, status in self.monitor.status().items():
            parts.append(f"**{name}: {STATUS_WORDS[status.status]}**. " + "; ".join(status.reasons) + ".")
            if status.tests:
                parts.append(
                    "| signal | p-value | effect |\n|---|---|---|\n"
                    + "\n".join(
                        f"| {t.signal} | {t.p_value:.3g} | {t.effect_name} {t.effect:.3g} |" for t in status.tests
                    )
                )
            odd = [a for a in status.atypical if a["text"]]
            if odd:
                parts.append(
                    "Most unusual inputs: "
                    + "; ".join(f"*{html.escape(a['text'][:80])}* ({a['distance']:.2f})" for a in odd[:3])
                )
        return "\n\n".join(parts)

    def refresh(self) -> tuple[list[list], str]:
        return self.table(), self.details()


def monitoring_tab(monitoring: AppMonitoring) -> None:
    """The Monitoring tab's content and its refresh events (inside ``with gr.Tab("Monitoring")``)."""
    gr.Markdown(
        "Is the traffic still like what the model was checked on? Each task's status over the requests "
        "served since the app started, before anyone has labels."
    )
    table = gr.Dataframe(
        headers=["task", "status", "requests (window of all)", "estimated accuracy", "reasons"],
        datatype=["str"] * 5,
        value=monitoring.table(),
        label="Status per task",
        interactive=False,
        wrap=True,
    )
    details = gr.Markdown(monitoring.details(), elem_id="monitoring-details")
    refresh = gr.Button("Refresh")
    refresh.click(
        monitoring.refresh,
        None,
        [table, details],
        api_name="monitoring",
        concurrency_id="camtl-model",
        concurrency_limit=1,
    )
    return table, details


# --------------------------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------------------------
def task_layout(spec: dict) -> dict:
    """How the one-task view looks for a task: box labels from its text fields, the second box only for a pair,
    the score instead of the label probabilities for regression."""
    fields = spec["text_fields"]
    regression = spec["kind"] == "regression"
    return {
        "text_label": field_label(fields[0]),
        # a distinct label even while hidden: gr.Examples draws nothing when two of its inputs share a label
        "pair_label": field_label(fields[1]) if len(fields) == 2 else "Second text",
        "pair_visible": len(fields) == 2,
        "regression": regression,
        "score_label": "Score ({:g} to {:g})".format(*spec["label_range"]) if regression else "Score",
    }


def task_view(predictor: Predictor, task: str) -> tuple:
    """Updates of (description, text box, second text box, answer, score, confidence) when ``task`` is chosen, and
    after every example click: gr.Examples puts back each input's properties as the page was built (the second box
    hidden when the first task reads one text), so the view is set again from the task shown."""
    layout = task_layout(predictor._task(task))
    pair_update = {} if layout["pair_visible"] else {"value": ""}  # a hidden box must not carry old text
    return (
        predictor.describe(task),
        gr.update(label=layout["text_label"]),
        gr.update(label=layout["pair_label"], visible=layout["pair_visible"], **pair_update),
        gr.update(visible=not layout["regression"], value=None),
        gr.update(visible=layout["regression"], value=None, label=layout["score_label"]),
        gr.update(value=""),
    )


def header(predictor: Predictor) -> str:
    # not the theme's font: Gradio's bundled semi-bold Source Sans Pro (what headings use) is a subset of a few
    # dozen letters, so a heading mixes two faces ("CA-MTL" with a small A)
    return (
        f'<h1 style="font-family: ui-sans-serif, system-ui, sans-serif">CA-MTL: one model, {len(predictor.tasks)} '
        "tasks</h1>\n\n"
        "One language model answers several kinds of questions about text. Pick a question, type a sentence (or "
        "two), and see its answer and how sure it is. Each answer comes with the model's score on examples it never "
        "saw in training.\n\n"
        f"Model: `{predictor.name}`. Inputs are limited to {predictor.max_tokens} tokens. Method: Conditionally "
        "Adaptive Multi-Task Learning (Pilault et al., ICLR 2021), a task embedding that conditions a shared BERT "
        "encoder."
    )


def warning_box(text: str) -> str:
    """The warning as a coloured HTML box (its ``**bold**`` and ```code``` rendered)."""
    body = html.escape(text)
    body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
    body = re.sub(r"`(.+?)`", r"<code>\1</code>", body)
    return (
        '<div style="border: 2px solid #d97706; background: #fef3c7; color: #78350f; padding: 10px 14px; '
        f'border-radius: 8px">&#9888;&#65039; {body}</div>'
    )


def build_demo(model_or_path=None, reference=None, monitor_window: int = 200) -> gr.Blocks:
    """The page: a one-task tab, an all-tasks tab and a monitoring tab, over one model loaded once (a folder, a Hub
    id, a model object with ``.tokenizer``, a pipeline or a :class:`Predictor`; default ``$CAMTL_MODEL`` or the
    default model). ``reference``: the monitoring reference (see :class:`AppMonitoring`)."""
    predictor = model_or_path if isinstance(model_or_path, Predictor) else Predictor(model_or_path)
    monitoring = AppMonitoring(predictor, reference, monitor_window)
    names = list(predictor.tasks)
    first = task_layout(predictor.tasks[names[0]])
    pair_tasks = [n for n, t in predictor.tasks.items() if len(t["text_fields"]) == 2]
    single_tasks = [n for n in names if n not in pair_tasks]
    stored = read_examples()
    with gr.Blocks(title="CA-MTL multi-task demo") as demo:
        gr.Markdown(header(predictor))
        if predictor.warning:
            gr.HTML(warning_box(predictor.warning), elem_id="quality-warning")
        with gr.Tab("One task"):
            with gr.Row():
                with gr.Column(scale=3):
                    # unknown values reach Predictor (a clear error, no traceback) instead of the dropdown's check
                    task = gr.Dropdown(
                        choices=[(task_choice(t), n) for n, t in predictor.tasks.items()],
                        value=names[0],
                        label="Question",
                        allow_custom_value=True,
                    )
                    about = gr.Markdown(predictor.describe(names[0]))
                    text = gr.Textbox(label=first["text_label"], lines=2, max_length=MAX_CHARS)
                    text_pair = gr.Textbox(
                        label=first["pair_label"], lines=2, max_length=MAX_CHARS, visible=first["pair_visible"]
                    )
                    run = gr.Button("Predict", variant="primary")
                with gr.Column(scale=2):
                    label = gr.Label(label="Answer", visible=not first["regression"])
                    score = gr.Number(
                        label=first["score_label"], visible=first["regression"], precision=3, interactive=False
                    )
                    sure = gr.Markdown(elem_id="confidence")
                    unusual = gr.Markdown(elem_id="ood-flag")
            examples = gr.Examples(
                examples=predictor.examples(),
                inputs=[task, text, text_pair],
                label="Examples (click one, then Predict)",
            )
        with gr.Tab("All tasks at once"):
            gr.Markdown(
                "One text runs every single-text task "
                f"({', '.join(predictor.info[n]['title'] for n in single_tasks) or 'none in this model'}); two texts "
                f"run every pair task ({', '.join(predictor.info[n]['title'] for n in pair_tasks) or 'none'}), all "
                "in one mixed-task batch."
            )
            all_text = gr.Textbox(label="Text", lines=2, max_length=MAX_CHARS)
            all_pair = gr.Textbox(
                label="Second text (optional: fill it to run the pair tasks)", lines=2, max_length=MAX_CHARS
            )
            run_all = gr.Button("Run all compatible tasks", variant="primary")
            table = gr.Dataframe(
                headers=["question", "answer", "confidence", "all answers"],
                datatype=["str", "str", "str", "str"],
                label="Answers",
                interactive=False,
                wrap=True,
            )
            gr.Examples(
                examples=[[e["text"], e.get("text_pair", "")] for e in stored["all_tasks"]], inputs=[all_text, all_pair]
            )
        with gr.Tab("Monitoring") as monitoring_page:
            monitoring_outputs = monitoring_tab(monitoring)

        view = functools.partial(task_view, predictor)
        view_outputs = [about, text, text_pair, label, score, sure]
        task.change(view, task, view_outputs, queue=False, api_visibility="private")
        task.change(lambda: "", None, unusual, queue=False, api_visibility="private")  # the flag was the old answer's
        examples.load_input_event.then(view, task, view_outputs, queue=False, api_visibility="private")
        # one model, one queue: both events share one concurrency slot, so requests run one after another
        run.click(
            predictor.predict,
            [task, text, text_pair],
            [label, score, sure],
            api_name="predict",
            concurrency_id="camtl-model",
            concurrency_limit=1,
        ).then(monitoring.flag_note, [task, text, text_pair], unusual, queue=False, api_visibility="private")
        monitoring_page.select(
            monitoring.refresh, None, list(monitoring_outputs), queue=False, api_visibility="private"
        )
        run_all.click(
            predictor.predict_all,
            [all_text, all_pair],
            table,
            api_name="predict_all",
            concurrency_id="camtl-model",
            concurrency_limit=1,
        )
    demo.queue(max_size=64, default_concurrency_limit=1)
    demo.predictor, demo.monitoring = predictor, monitoring
    return demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        default=None,
        help=f"checkpoint folder or Hub model id (default: ${MODEL_ENV}, else the project's default model)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (0.0.0.0 to serve the network; a Space sets GRADIO_SERVER_NAME)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnx", "onnx-int8", "auto"),
        help="what runs the model: PyTorch, ONNX Runtime fp32 or int8 (camtl.serving; a checkpoint "
        "is exported once into the cache), or auto: the fastest whose dev scores hold",
    )
    parser.add_argument(
        "--check-examples",
        action="store_true",
        help="run app_examples.json's candidates through the model and report; serve nothing",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="with --check-examples: mark in app_examples.json "
        f"the first {EXAMPLES_PER_TASK} right ones per task as "
        "shown, the others as not shown",
    )
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.model, backend=args.backend)
    except CheckpointNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check_examples:
        stored = read_examples()
        rows = check_examples(predictor, stored)
        print(report_examples(rows))
        if args.write:
            mark_shown(stored, rows, predictor.name)
            EXAMPLES_FILE.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"Marked the shown examples in {EXAMPLES_FILE}")
        return 0
    build_demo(predictor).launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
