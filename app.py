"""CA-MTL demo: one multi-task model, a task selector, and a view that runs every compatible task at once.

    python app.py                                  # the quick-start checkpoint, outputs/quickstart (python train.py)
    python app.py --model PATH_OR_HUB_ID           # any CA-MTL checkpoint folder or Hub model id
    CAMTL_MODEL=user/camtl-glue python app.py      # the same through the environment (how the Space is pointed)

Tests and notebooks build the page with :func:`build_demo` and launch it themselves; :class:`Predictor` holds the
two plain functions behind it, ``predict(task, text, text_pair)`` and ``predict_all(text, text_pair)``.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no look-ups of outside hosts at launch

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import gradio as gr  # noqa: E402
from safetensors import SafetensorError  # noqa: E402

DEFAULT_MODEL = "outputs/quickstart"
#: Characters refused before tokenizing: far past any model's token limit, cheap to check.
MAX_CHARS = 20_000
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")

#: Hand-written examples for the GLUE task names; other tasks get GENERIC_EXAMPLES by their number of texts.
EXAMPLES = {
    "sst2": [("A warm, funny and beautifully acted film.", ""), ("The plot is thin and the jokes fall flat.", "")],
    "cola": [("The cat sat on the mat.", ""), ("The cat the mat on sat.", "")],
    "mrpc": [("The company reported a profit of $2 million in the third quarter.",
              "In the third quarter, the firm earned $2 million.")],
    "stsb": [("A man is playing a guitar.", "A person plays an instrument."),
             ("A man is playing a guitar.", "A woman is slicing onions.")],
    "rte": [("The museum, founded in 1901, holds over 5,000 paintings.", "The museum was founded in 1901.")],
    "wnli": [("The trophy didn't fit in the suitcase because it was too big.", "The trophy was too big.")],
    "qnli": [("When was the museum founded?", "The museum, founded in 1901, holds over 5,000 paintings.")],
    "mnli": [("A woman is reading a book in the park.", "A woman is outdoors."),
             ("A woman is reading a book in the park.", "A woman is asleep at home.")],
    "qqp": [("How do I learn to play the guitar?", "What is the best way to learn guitar?")],
}
GENERIC_EXAMPLES = {
    1: [("The service was quick and the staff were friendly.", "")],
    2: [("A man is playing a guitar on stage.", "Someone is performing music.")],
}
ALL_TASKS_EXAMPLES = [
    ("A warm, funny and beautifully acted film.", ""),
    ("A woman is reading a book in the park.", "A woman is outdoors."),
]


def refuse(message: str) -> gr.Error:
    """The error for a bad request: its message reaches the page and the API caller; no traceback in the log."""
    return gr.Error(message, title="Cannot run this input", print_exception=False)


class CheckpointNotFoundError(FileNotFoundError):
    """No CA-MTL checkpoint where the app was told to look; the message says how to make or name one."""


def resolve_model(model: str | None = None) -> str:
    """The checkpoint to serve: ``model``, else ``$CAMTL_MODEL``, else ``outputs/quickstart``; a folder must exist
    (``CheckpointNotFoundError`` otherwise), anything shaped ``owner/name`` that is not a folder is a Hub id."""
    model = model or os.environ.get("CAMTL_MODEL") or DEFAULT_MODEL
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise CheckpointNotFoundError(f"{model!r} is a folder but holds no config.json: not a saved checkpoint "
                                          "(a folder written by model.save_pretrained, e.g. by `python train.py`).")
        return model
    if model == DEFAULT_MODEL or not _HUB_ID.match(model) or model.startswith((".", "/", "~")):
        raise CheckpointNotFoundError(
            f"No CA-MTL checkpoint at {model!r}. Train the quick-start model with `python train.py` (it writes "
            f"{DEFAULT_MODEL}/), or point the app at a checkpoint folder or a Hub model id: "
            "`python app.py --model PATH_OR_HUB_ID` (or set CAMTL_MODEL)."
        )
    return model


def load_pipeline(model_or_path):
    """A ``CaMtlClassificationPipeline`` for a checkpoint folder, a Hub id or a model object (with ``.tokenizer``).

    The repository's own pipeline class is used when importable (running from the repo); elsewhere (a Space) the
    class that travels with the checkpoint (``pipeline(model=..., trust_remote_code=True)``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Pipeline, pipeline

    if isinstance(model_or_path, Pipeline):
        return model_or_path
    try:
        from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline
    except ImportError:
        CaMtlClassificationPipeline = None
    if model_or_path is not None and not isinstance(model_or_path, str):  # a model object, e.g. straight from CaMtlForMultiTask.from_bert
        if CaMtlClassificationPipeline is None:
            raise ValueError("A model object needs the modeling_camtl package; pass a checkpoint folder instead")
        return CaMtlClassificationPipeline(model=model_or_path, tokenizer=model_or_path.tokenizer)
    path = resolve_model(model_or_path)
    try:
        if CaMtlClassificationPipeline is None:
            return pipeline(model=path, trust_remote_code=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        return CaMtlClassificationPipeline(model=model, tokenizer=tokenizer)
    except OSError as e:  # a Hub id that cannot be reached, a folder with missing files
        raise CheckpointNotFoundError(f"Could not load the CA-MTL checkpoint {path!r}: {e}") from e
    except SafetensorError as e:  # a weights file cut short
        raise CheckpointNotFoundError(f"Could not load the CA-MTL checkpoint {path!r}: "
                                      f"{damaged_weights_message(path, e)}") from e


def damaged_weights_message(path: str, error: Exception) -> str:
    """The damaged file named (`camtl.weights`); in a Space, where only this file travels, the error as it is."""
    try:
        from camtl.weights import damaged_weights_message as describe
    except ImportError:
        return f"its weights are damaged or incomplete ({error})"
    return describe(path, error)


def field_label(name: str) -> str:
    """``sentence1`` -> ``Sentence 1``, ``premise`` -> ``Premise``."""
    words = re.sub(r"(?<=[A-Za-z])(\d+)$", r" \1", name.replace("_", " ")).strip()
    return words[:1].upper() + words[1:]


class Predictor:
    """The model, loaded once, behind the page's two plain functions."""

    def __init__(self, model_or_path):
        self.pipe = load_pipeline(model_or_path)
        self.tasks = {t["name"]: t for t in self.pipe.tasks}  # in task-id order
        self.max_tokens = self.pipe.max_length
        self.name = getattr(self.pipe.model.config, "_name_or_path", "") or "CA-MTL model"
        results_file = os.path.join(self.name, "results.json")  # written beside the checkpoint by train.py
        self.dev_results = {}
        if os.path.isfile(results_file):
            with open(results_file, encoding="utf-8") as f:
                self.dev_results = json.load(f).get("tasks") or {}

    # ----- the plain functions -----
    def predict(self, task: str, text: str, text_pair: str = "") -> tuple[dict | None, float | None]:
        """``({label: probability}, None)`` for a classification task, ``(None, score)`` for a regression task.

        Raises ``gr.Error`` (shown in the page, returned through the API) for an unknown task or bad text."""
        spec = self._task(task)
        text_pair = text_pair or ""
        result = self._run([self._input(spec, text, text_pair)])[0]
        if spec["kind"] == "regression":
            return None, round(result["score"], 4)
        return {r["label"]: r["score"] for r in result}, None

    def predict_all(self, text: str, text_pair: str = "") -> list[list]:
        """Run every compatible task (pair tasks when ``text_pair`` is given, else single-text tasks) in ONE
        mixed-task batch; one row ``[task, prediction, score, details]`` per task."""
        text_pair = text_pair or ""
        pair = bool(text_pair.strip())
        specs = [t for t in self.tasks.values() if (len(t["text_fields"]) == 2) == pair]
        if not specs:
            raise refuse("This model has no pair tasks: clear the second text to run its single-text tasks."
                         if pair else "This model has no single-text tasks: give a second text to run its pair tasks.")
        results = self._run([self._input(t, text, text_pair) for t in specs])
        rows = []
        for spec, result in zip(specs, results):
            if spec["kind"] == "regression":
                lo, hi = spec["label_range"]
                rows.append([spec["name"], f"{result['score']:.2f}", round(result["score"], 4),
                             f"regression score, labels range {lo:g} to {hi:g}"])
            else:
                details = ", ".join(f"{r['label']} {r['score']:.2f}" for r in result)
                rows.append([spec["name"], result[0]["label"], round(result[0]["score"], 4), details])
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
                raise refuse(f"{field} is empty: task {spec['name']!r} needs "
                             f"{' and '.join(fields) if len(fields) == 2 else 'some text'}.")
            if len(value) > MAX_CHARS:
                raise refuse(f"{field} is {len(value):,} characters long; this model reads at most "
                             f"{self.max_tokens} tokens.")
        if len(fields) == 2:
            return {"text": text, "text_pair": text_pair, "task_name": spec["name"]}
        return {"text": text, "task_name": spec["name"]}

    def _run(self, inputs: list) -> list:
        """Every input in one forward pass (one batch, mixed tasks); input errors become ``gr.Error``."""
        try:
            return self.pipe(inputs, batch_size=len(inputs), truncation=False)
        except ValueError as e:  # empty text, too many tokens, wrong number of texts
            raise refuse(str(e)) from e

    def describe(self, task: str) -> str:
        """One line on ``task``: what it reads, what it outputs, and its dev results when the folder has them."""
        spec = self.tasks[task]
        reads = " + ".join(f"*{field_label(f)}*" for f in spec["text_fields"])
        if spec["kind"] == "regression":
            line = "**{}**: regression on {}, scores from {:g} to {:g}.".format(task, reads, *spec["label_range"])
        else:
            line = f"**{task}**: classification of {reads} into {', '.join(f'`{x}`' for x in spec['labels'])}."
        metrics = {k: v for k, v in self.dev_results.get(task, {}).items() if k != "main"}
        if metrics:
            line += " Dev: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + "."
        return line

    def examples(self) -> list[list]:
        rows = []
        for name, spec in self.tasks.items():
            for text, pair in EXAMPLES.get(name) or GENERIC_EXAMPLES[len(spec["text_fields"])]:
                if bool(pair) == (len(spec["text_fields"]) == 2):  # an example must fit the task's inputs
                    rows.append([name, text, pair])
        return rows


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
    """Updates of (description, text box, second text box, label output, score output) when ``task`` is chosen."""
    layout = task_layout(predictor.tasks[task])
    pair_update = {} if layout["pair_visible"] else {"value": ""}  # a hidden box must not carry old text
    return (
        predictor.describe(task),
        gr.update(label=layout["text_label"]),
        gr.update(label=layout["pair_label"], visible=layout["pair_visible"], **pair_update),
        gr.update(visible=not layout["regression"], value=None),
        gr.update(visible=layout["regression"], value=None, label=layout["score_label"]),
    )


def build_demo(model_or_path=None) -> gr.Blocks:
    """The page: a one-task tab and an all-tasks tab, over one model loaded once (a folder, a Hub id, a model object
    with ``.tokenizer``, a pipeline or a :class:`Predictor`; default ``$CAMTL_MODEL`` or ``outputs/quickstart``)."""
    predictor = model_or_path if isinstance(model_or_path, Predictor) else Predictor(model_or_path)
    names = list(predictor.tasks)
    first = task_layout(predictor.tasks[names[0]])
    pair_tasks = [n for n, t in predictor.tasks.items() if len(t["text_fields"]) == 2]
    single_tasks = [n for n in names if n not in pair_tasks]
    with gr.Blocks(title="CA-MTL multi-task demo") as demo:
        # not the theme's font: Gradio's bundled semi-bold Source Sans Pro (what headings use) is a subset of a few
        # dozen letters, so a heading mixes two faces ("CA-MTL" with a small A)
        gr.Markdown(
            f'<h1 style="font-family: ui-sans-serif, system-ui, sans-serif">CA-MTL: one model, {len(names)} tasks</h1>'
            "\n\n"
            f"Conditionally Adaptive Multi-Task Learning (Pilault et al., ICLR 2021): a task embedding conditions a "
            f"shared BERT encoder. Model: `{predictor.name}`. Inputs are limited to {predictor.max_tokens} tokens."
        )
        with gr.Tab("One task"):
            with gr.Row():
                with gr.Column(scale=3):
                    task = gr.Dropdown(choices=names, value=names[0], label="Task")
                    about = gr.Markdown(predictor.describe(names[0]))
                    text = gr.Textbox(label=first["text_label"], lines=2, max_length=MAX_CHARS)
                    text_pair = gr.Textbox(label=first["pair_label"], lines=2, max_length=MAX_CHARS,
                                           visible=first["pair_visible"])
                    run = gr.Button("Predict", variant="primary")
                with gr.Column(scale=2):
                    label = gr.Label(label="Label probabilities", visible=not first["regression"])
                    score = gr.Number(label=first["score_label"], visible=first["regression"], precision=3,
                                      interactive=False)
            gr.Examples(examples=predictor.examples(), inputs=[task, text, text_pair], label="Examples per task")
        with gr.Tab("All tasks at once"):
            gr.Markdown(
                "One text runs every single-text task "
                f"({', '.join(single_tasks) or 'none in this model'}); two texts run every pair task "
                f"({', '.join(pair_tasks) or 'none in this model'}), all in one mixed-task batch."
            )
            all_text = gr.Textbox(label="Text", lines=2, max_length=MAX_CHARS)
            all_pair = gr.Textbox(label="Second text (optional: fill it to run the pair tasks)", lines=2,
                                  max_length=MAX_CHARS)
            run_all = gr.Button("Run all compatible tasks", variant="primary")
            table = gr.Dataframe(headers=["task", "prediction", "score", "details"],
                                 datatype=["str", "str", "number", "str"], label="Predictions", interactive=False,
                                 wrap=True)
            gr.Examples(examples=[list(e) for e in ALL_TASKS_EXAMPLES], inputs=[all_text, all_pair])

        task.change(functools.partial(task_view, predictor), task, [about, text, text_pair, label, score],
                    queue=False, api_visibility="private")
        # one model, one queue: both events share one concurrency slot, so requests run one after another
        run.click(predictor.predict, [task, text, text_pair], [label, score], api_name="predict",
                  concurrency_id="camtl-model", concurrency_limit=1)
        run_all.click(predictor.predict_all, [all_text, all_pair], table, api_name="predict_all",
                      concurrency_id="camtl-model", concurrency_limit=1)
    demo.queue(max_size=64, default_concurrency_limit=1)
    demo.predictor = predictor
    return demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help=f"checkpoint folder or Hub model id (default: $CAMTL_MODEL, "
                                                       f"else {DEFAULT_MODEL})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (0.0.0.0 to serve the network; a Space sets GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    try:
        demo = build_demo(args.model)
    except CheckpointNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
