"""A ``transformers`` pipeline for CA-MTL checkpoints: classify (or score) text for any of the model's tasks.

This file travels with every checkpoint (``trust_remote_code``), next to the config and modeling files: it imports only
the standard library, torch and transformers. Once a model folder carries it (see :func:`save_pipeline_files`), both
of these work without this package installed::

    from transformers import pipeline

    pipe = pipeline(model="path/or/hub-id", trust_remote_code=True)  # or pipeline("camtl-classification", ...)
    pipe("a gripping, funny film", task_name="sst2")
    # [{'label': 'positive', 'score': 0.97}, {'label': 'negative', 'score': 0.03}]
    pipe([{"text": "A man is playing.", "text_pair": "Someone plays."}], task_name="rte", top_k=1)
    # [[{'label': 'entailment', 'score': 0.91}]]
    pipe({"text": "A man is playing.", "text_pair": "Someone plays."}, task_name="stsb")
    # {'score': 4.2}
    pipe("Stocks fell as the storm hit the coast.", task_name="topics", threshold=0.3)  # a multi_label task
    # [{'label': 'business', 'score': 0.81}, {'label': 'weather', 'score': 0.44}]: each label's own sigmoid

An input is a string (single-text tasks) or a dict ``{"text", "text_pair", "task_name"}`` (``text_pair`` for pair
tasks; ``task_name`` overrides the call's ``task_name`` for that input, so one batch may mix tasks). A list of inputs
gives a list of results; ``batch_size=n`` runs ``n`` inputs, of any tasks, in one forward pass.
"""

import json
import os
import shutil

import torch
from transformers import Pipeline

PIPELINE_TASK = "camtl-classification"
#: A multi-label task's default threshold: a label is predicted when its sigmoid reaches it (camtl's metrics too).
MULTI_LABEL_THRESHOLD = 0.5
PIPELINE_FILE = "pipeline_camtl.py"
#: The ``custom_pipelines`` entry of ``config.json``, as ``Pipeline.save_pretrained`` writes it for a registered
#: pipeline: ``pipeline(model=folder, trust_remote_code=True)`` reads it and loads the class from the folder.
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_camtl.CaMtlClassificationPipeline",
        "pt": ["AutoModelForSequenceClassification"],
        "type": "text",
    }
}


class CaMtlClassificationPipeline(Pipeline):
    """Text classification (label/score lists) and regression (a score) for a chosen task of a CA-MTL model.

    Parameters (at construction or per call):
        task_name (`str`): the task to run (``model.config.tasks[i]["name"]``); optional when the model has one task.
        top_k (`int`, *optional*): keep the ``top_k`` most likely labels (default: all, most likely first).
        threshold (`float`, defaults to 0.5): multi-label tasks only: the labels whose sigmoid score reaches it are
            returned (possibly none; 0 returns every label with its score). Refused for other task kinds.
        truncation (`bool`, defaults to True): truncate inputs longer than :attr:`max_length` tokens; with False they
            raise ``ValueError`` naming the limit.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "model_type", None) != "camtl":
            raise ValueError(
                f"{type(self).__name__} needs a CA-MTL model (config.model_type 'camtl'), got "
                f"{getattr(self.model.config, 'model_type', None)!r}"
            )
        self.model.eval()  # a model handed over straight from training would otherwise keep its dropout on

    @property
    def tasks(self) -> list:
        """The model's task specs, in task-id order."""
        return self.model.config.tasks

    @property
    def max_length(self) -> int:
        """The longest input, in tokens (special tokens included), that the model reads."""
        limit = self.model.config.max_position_embeddings
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        return min(limit, tokenizer_limit) if isinstance(tokenizer_limit, int) and tokenizer_limit > 0 else limit

    def task_spec(self, task_name) -> dict:
        """The spec of ``task_name`` (a name or an id); ``ValueError`` naming the valid tasks otherwise."""
        if task_name is None:
            if len(self.tasks) == 1:
                return self.tasks[0]
            raise ValueError(f"Say which task to run: task_name=... (one of {[t['name'] for t in self.tasks]})")
        return self.tasks[self.model.config.task_id(task_name)]

    def _sanitize_parameters(self, task_name=None, top_k="", truncation=None, threshold=None, **kwargs):
        if kwargs:
            raise TypeError(
                f"Unknown argument(s) {sorted(kwargs)}; valid: task_name, top_k, truncation, threshold, batch_size"
            )
        preprocess_params, postprocess_params = {}, {}
        if task_name is not None:
            self.task_spec(task_name)  # fail early, before any input is read
            preprocess_params["task_name"] = task_name
        if truncation is not None:
            preprocess_params["truncation"] = bool(truncation)
        if top_k != "":  # "" = not given; None = every label
            if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
                raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
            postprocess_params["top_k"] = top_k
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
                raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
            postprocess_params["threshold"] = float(threshold)
        return preprocess_params, {}, postprocess_params

    def preprocess(self, inputs, task_name=None, truncation=True) -> dict:
        if isinstance(inputs, str):
            text, text_pair = inputs, None
        elif isinstance(inputs, dict):
            unknown = set(inputs) - {"text", "text_pair", "task_name"}
            if unknown or "text" not in inputs:
                raise ValueError(
                    f"An input dict holds 'text' and optionally 'text_pair' and 'task_name', got keys {sorted(inputs)}"
                )
            text, text_pair = inputs["text"], inputs.get("text_pair")
            task_name = inputs.get("task_name", task_name)
        else:
            raise TypeError(
                f"An input is a string or a dict {{'text', 'text_pair', 'task_name'}}, got {type(inputs).__name__}"
            )
        task = self.task_spec(task_name)
        fields = task["text_fields"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The {fields[0]} is empty: task {task['name']!r} needs some text")
        if len(fields) == 2 and (not isinstance(text_pair, str) or not text_pair.strip()):
            raise ValueError(
                f"Task {task['name']!r} reads a pair: give both {fields[0]} and {fields[1]} "
                "(an input dict {'text': ..., 'text_pair': ...})"
            )
        if len(fields) == 1 and text_pair:
            raise ValueError(f"Task {task['name']!r} reads one text ({fields[0]}); it got a text_pair too")
        limit = self.max_length
        encoded = self.tokenizer(
            text,
            text_pair if len(fields) == 2 else None,
            truncation=bool(truncation),
            max_length=limit if truncation else None,
            return_tensors="pt",
        )
        length = encoded["input_ids"].shape[1]
        if length > limit:
            raise ValueError(f"The input is {length} tokens long; this model reads at most {limit} tokens: shorten it.")
        return {
            "input_ids": encoded["input_ids"],  # (1, T)
            "attention_mask": encoded["attention_mask"],  # (1, T)
            "token_type_ids": encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"])),  # (1, T)
            "task_ids": torch.tensor([self.model.config.task_id(task["name"])]),  # (1,)
        }

    def _forward(self, model_inputs: dict) -> dict:
        outputs = self.model(**model_inputs)
        # logits first: the batch unroller reads the batch size from the first entry
        return {"logits": outputs.logits, "task_ids": model_inputs["task_ids"]}  # (B, K), (B,)

    def postprocess(self, model_outputs: dict, top_k=None, threshold=None):
        task = self.tasks[int(model_outputs["task_ids"][0])]
        logits = model_outputs["logits"][0].float()  # (K,), the dtype's minimum past the task's labels (sliced off)
        if threshold is not None and task["kind"] != "multi_label":
            raise ValueError(f"threshold is for multi-label tasks; task {task['name']!r} is a {task['kind']} task")
        if task["kind"] == "regression":
            return {"score": float(logits[0])}
        if task["kind"] == "multi_label":  # each label its own sigmoid; those reaching the threshold, most likely first
            scores = torch.sigmoid(logits[: len(task["labels"])]).tolist()  # (num_labels,)
            cut = MULTI_LABEL_THRESHOLD if threshold is None else threshold
            ranked = sorted(((label, p) for label, p in zip(task["labels"], scores) if p >= cut), key=lambda lp: -lp[1])
            return [{"label": label, "score": score} for label, score in ranked[:top_k]]
        probs = logits[: len(task["labels"])].softmax(-1)  # (num_labels,)
        ranked = sorted(zip(task["labels"], probs.tolist()), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked[:top_k]]


def save_pipeline_files(save_directory) -> None:
    """Make a saved CA-MTL folder carry this pipeline: copy this file beside the modeling files and add the
    ``custom_pipelines`` entry to its ``config.json`` (written as ``save_pretrained`` writes it: sorted keys)."""
    target = os.path.join(save_directory, PIPELINE_FILE)
    if not os.path.exists(target) or not os.path.samefile(__file__, target):
        shutil.copyfile(__file__, target)
    config_file = os.path.join(save_directory, "config.json")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    config["custom_pipelines"] = {**config.get("custom_pipelines", {}), **CUSTOM_PIPELINES}
    with open(config_file, "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = [
    "CUSTOM_PIPELINES",
    "MULTI_LABEL_THRESHOLD",
    "PIPELINE_TASK",
    "CaMtlClassificationPipeline",
    "save_pipeline_files",
]
