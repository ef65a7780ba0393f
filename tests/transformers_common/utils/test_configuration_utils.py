"""Stand-in (ours, not transformers') for ``tests/utils/test_configuration_utils.py``, which the 5.23.0 sdist does not
carry: ``config_common_kwargs``, the fields common to every ``PreTrainedConfig`` of transformers 5.23 with
non-default values, which ``ConfigTester.check_config_arguments_init`` passes to a config and reads back.

The classifier fields ``id2label``, ``label2id`` and ``problem_type`` are left out: CA-MTL derives them from its tasks
and refuses other values (tests/test_conformance.py), so a free value cannot be read back by design.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,  # with no attention implementation chosen yet, transformers dispatches eager
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["CaMtlForMultiTask"],
}
