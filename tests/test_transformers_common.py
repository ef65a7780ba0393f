"""transformers' own common model tests (``ModelTesterMixin``, ``ConfigTester``) run against tiny CA-MTL configs, as a
maintainer runs them on BERT: vendored verbatim from the transformers 5.23.0 sdist in tests/transformers_common (see
its NOTICE). Every input carries ``task_ids`` (a batch mixes the three tasks). A test that does not apply to CA-MTL
is skipped with its reason in ``SKIPPED``; CA-MTL's own checks (identity at init, mixed-task batches, remote-code
loading, the behaviours of issue 26) keep their own files.
"""

import unittest
from unittest import mock

import pytest
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, MODEL_MAPPING_NAMES

from modeling_camtl import CaMtlConfig, CaMtlForMultiTask, CaMtlModel
from tests.transformers_common.test_configuration_common import ConfigTester
from tests.transformers_common.test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask

TASKS = [
    {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]},
    {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0, 5],
    },
    {
        "name": "mnli",
        "kind": "classification",
        "labels": ["entailment", "neutral", "contradiction"],
        "text_fields": ["premise", "hypothesis"],
    },
    {"name": "cola", "kind": "classification", "labels": ["unacceptable", "acceptable"], "text_fields": ["sentence"]},
    {
        "name": "rte",
        "kind": "classification",
        "labels": ["entailment", "not_entailment"],
        "text_fields": ["sentence1", "sentence2"],
    },
]  # five tasks: the mixin pads some batches with random task ids in [0, 5)

#: Mixin tests that do not apply to CA-MTL, each with the reason. Every other mixin test runs, or skips itself with
#: transformers' own reason (GPU-only, flash attention, deepspeed, multi-device, @slow, features CA-MTL lacks).
SKIPPED = {
    "test_load_with_mismatched_shapes": "it reloads the model with num_labels=42 and expects 42-wide logits; CA-MTL "
    "sizes its heads by config.tasks and refuses a contradicting num_labels "
    "(ValueError; test_conformance.py)",
    "test_can_load_ignoring_mismatched_shapes": "same: num_labels=42 with ignore_mismatched_sizes=True is refused, "
    "not re-initialised, by design",
    "test_problem_types": "it sets config.problem_type to each of transformers' three kinds in turn; CA-MTL derives "
    "problem_type from its tasks' kinds (each row's loss follows its own task) and refuses a "
    "contradicting one (test_conformance.py)",
}


@pytest.fixture(autouse=True)
def _camtl_in_transformers_mappings():
    """During each test, the mixin's name tables list CA-MTL as transformers' own models are listed: CaMtlModel a base
    model (not trained with labels), CaMtlForMultiTask a sequence classifier. Loading goes by the classes registered
    in modeling_camtl/__init__.py, which win over these names."""
    with (
        mock.patch.dict(MODEL_MAPPING_NAMES, {"camtl": "CaMtlModel"}),
        mock.patch.dict(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, {"camtl": "CaMtlForMultiTask"}),
    ):
        yield


class CaMtlModelTester:
    def __init__(
        self,
        parent,
        batch_size=6,
        seq_length=9,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.is_training = is_training

    def get_config(self) -> CaMtlConfig:
        return CaMtlConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=64,
            tasks=TASKS,
            task_embedding_dim=8,
            adapter_size=6,
            conditional_attention_blocks=2,
            conditional_attention_span=8,
            generator_init_std=0.2,
        )  # live conditioning, not zeros

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": random_attention_mask([self.batch_size, self.seq_length]),
            "token_type_ids": ids_tensor([self.batch_size, self.seq_length], 2),
            "task_ids": torch.arange(self.batch_size) % len(TASKS),  # every task in every batch
        }
        return self.get_config(), inputs


class CaMtlModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CaMtlModel, CaMtlForMultiTask)
    additional_model_inputs = ["task_ids"]  # the mixin's hook for inputs besides input_ids and the mask
    test_resize_embeddings = True
    test_torch_exportable = True

    def setUp(self):
        self.model_tester = CaMtlModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=CaMtlConfig, hidden_size=48, num_attention_heads=4, tasks=TASKS
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is CaMtlForMultiTask:  # a valid label for each row's own task
            labels = torch.tensor([1.0, 2.5, 2.0, 0.0, 1.0])  # one per task: class ids, a score for stsb
            inputs["labels"] = labels[inputs["task_ids"]]
        return inputs

    # ----- ConfigTester, check by check (run_common_tests minus the two that contradict derived fields) -----
    def test_config_common_properties(self):
        self.config_tester.create_and_test_config_common_properties()

    def test_config_to_json_string(self):
        self.config_tester.create_and_test_config_to_json_string()

    def test_config_to_json_file(self):
        self.config_tester.create_and_test_config_to_json_file()

    def test_config_from_and_save_pretrained(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained()

    def test_config_from_and_save_pretrained_subfolder(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained_subfolder()

    def test_config_from_and_save_pretrained_composite(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained_composite()

    @unittest.skip(
        "ConfigTester sets num_labels=5, then 3, on a config whose tasks give 3: CA-MTL derives "
        "num_labels from the tasks and refuses other values (test_conformance.py)"
    )
    def test_config_with_num_labels(self):
        self.config_tester.create_and_test_config_with_num_labels()

    def test_config_can_be_init_without_params(self):
        self.config_tester.check_config_can_be_init_without_params()

    def test_config_arguments_init(self):
        self.config_tester.check_config_arguments_init()


def _skip(reason: str):
    @unittest.skip(reason)
    def skipped(self):
        pass

    return skipped


for _name in dir(ModelTesterMixin):  # the mixin's tests (parametrised ones expanded) that SKIPPED lists
    for _key, _reason in SKIPPED.items():
        if _name == _key or _name.startswith(_key + "_"):
            setattr(CaMtlModelTest, _name, _skip(_reason))


def test_skip_tables_name_real_mixin_tests():
    """Every skip names a test the mixin has, so a renamed upstream test cannot hide behind a stale entry."""
    names = {name for name in dir(ModelTesterMixin) if name.startswith("test_")}
    for key in SKIPPED:
        assert any(name == key or name.startswith(key + "_") for name in names), key
