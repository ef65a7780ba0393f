"""transformers conventions CA-MTL keeps (issue 26), each with its own test: the attention registry
(``set_attn_implementation``: eager, sdpa, flex attention; flash attention refused clearly), ``output_attentions``
(argument and config flag alike, as BERT), ``inputs_embeds``, finite logits, and the sequence-classifier config
fields derived from the tasks. transformers' own common tests run in test_transformers_common.py."""

import copy

import pytest
import torch
from transformers import AttentionInterface, BertConfig, BertModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import modeling_camtl.modeling_camtl as modeling
from modeling_camtl import CaMtlConfig, CaMtlForMultiTask, CaMtlModel
from tests.test_modeling import TASKS, make_inputs, make_labels, randomize_conditioning, tiny_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = CaMtlForMultiTask(tiny_config()).eval()
    randomize_conditioning(m, std=0.5)
    return m


def with_attention(model, implementation):
    other = copy.deepcopy(model)
    other.set_attn_implementation(implementation)
    return other


# ----- the attention registry -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_every_bias_backend_computes_the_same(model, padded):
    """eager, sdpa and flex attention agree, with the conditional block bias (randomised) in layer 1. Unpadded, the
    backend mask is None: sdpa must not turn causal then (the module says is_causal=False)."""
    inputs = make_inputs(seq_len=13)  # past the span: the blocks repeat
    if not padded:
        inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    with torch.no_grad():
        reference = with_attention(model, "eager")(**inputs).logits
        for implementation in ("sdpa", "flex_attention"):
            other = with_attention(model, implementation)
            assert other.config._attn_implementation == implementation
            torch.testing.assert_close(other(**inputs).logits, reference, atol=1e-5, rtol=1e-5)


def test_the_block_bias_reaches_the_registered_function_as_the_additive_mask(model, monkeypatch):
    """A backend registered in transformers' AttentionInterface gets M(c) + padding as its (B, 1, T, T) float mask in
    the conditional layer, and the backend's own mask elsewhere. A backend CA-MTL does not know is refused."""
    seen = []

    def recording_sdpa(module, query, key, value, attention_mask, **kwargs):
        seen.append((module.camtl_block_bias is not None, attention_mask))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("camtl_test_recording", recording_sdpa)
    AttentionMaskInterface.register("camtl_test_recording", sdpa_mask)
    inputs = make_inputs()
    with torch.no_grad():
        expected = with_attention(model, "sdpa")(**inputs).logits
        model.config._attn_implementation = "camtl_test_recording"
        with pytest.raises(ValueError, match="cannot take CA-MTL's conditional attention bias"):
            model(**inputs)
        monkeypatch.setattr(
            modeling, "BIAS_ATTENTION_BACKENDS", modeling.BIAS_ATTENTION_BACKENDS + ("camtl_test_recording",)
        )
        got = model(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (plain, plain_mask), (conditional, bias) = seen
    assert not plain and conditional  # layer 0 plain, layer 1 conditional (the upper half)
    assert plain_mask.dtype == torch.bool  # sdpa's own padding mask from create_bidirectional_mask
    assert bias.dtype == torch.float32 and bias.shape == (6, 1, 10, 10)
    padded = (~inputs["attention_mask"].bool())[:, None, :].expand(-1, 10, -1)  # (B, T, T): padding keys
    assert (bias.squeeze(1)[padded] < -1e30).all()  # padding folded in
    assert bias.squeeze(1)[~padded].abs().max() > 0  # and M(c) where not padded


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_is_refused_with_the_reason(model, implementation, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"cannot take CA-MTL's conditional attention bias .* use one of "
        r"\['eager', 'sdpa', 'flex_attention'\]",
    ):
        model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == "sdpa"  # unchanged
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="conditional_attention=False"):
        CaMtlForMultiTask.from_pretrained(tmp_path, attn_implementation=implementation)
    # forced behind transformers' back: the forward refuses it too, rather than dropping the bias
    model.config._attn_implementation = implementation
    with pytest.raises(ValueError, match="cannot take CA-MTL's conditional attention bias"):
        model(**make_inputs())


def test_without_conditional_attention_flash_is_transformers_decision():
    """No conditional attention: CA-MTL does not object; what remains is transformers' own check (here: no GPU or no
    flash_attn package)."""
    plain = CaMtlForMultiTask(tiny_config(conditional_attention=False))
    with pytest.raises((ValueError, ImportError)) as err:
        plain.set_attn_implementation("flash_attention_2")
    assert "CA-MTL" not in str(err.value)


# ----- output_attentions --------------------------------------------------------------------------------------------
def test_output_attentions_argument_and_config_flag_agree_with_eager(model):
    eager = with_attention(model, "eager")
    inputs = make_inputs()
    with torch.no_grad():
        by_argument = eager(**inputs, output_attentions=True)
        flagged = copy.deepcopy(eager)
        flagged.config.output_attentions = True
        by_config = flagged(**inputs)
        silent = eager(**inputs)
    assert silent.attentions is None
    assert len(by_argument.attentions) == 2 and len(by_config.attentions) == 2
    for a, b in zip(by_argument.attentions, by_config.attentions):
        assert a.shape == (6, 4, 10, 10)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a.sum(-1), torch.ones(6, 4, 10))  # probabilities
        padded = ~inputs["attention_mask"].bool()
        assert (a.permute(0, 3, 1, 2)[padded] == 0).all()  # no weight on padding keys
    # the conditional layer's probabilities carry M(c): zeroing the block bias changes them, not layer 0's
    no_bias = copy.deepcopy(eager)
    with torch.no_grad():
        no_bias.bert.encoder.layer[1].attention.self.camtl_block_bias.blocks.zero_()
        no_bias.bert.encoder.layer[1].attention.self.camtl_block_bias.generator.bias.zero_()
        no_bias.bert.encoder.layer[1].attention.self.camtl_block_bias.generator.weight.zero_()
        other = no_bias(**inputs, output_attentions=True).attentions
    torch.testing.assert_close(other[0], by_argument.attentions[0])
    assert (other[1] - by_argument.attentions[1]).abs().max() > 1e-3
    # return_dict=False: a tuple with the attentions in it, as transformers' models give
    as_tuple = eager(**inputs, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(by_argument.to_tuple())
    for a, b in zip(as_tuple[-1], by_argument.attentions):
        torch.testing.assert_close(a, b)


def test_output_attentions_on_other_backends_does_what_bert_does(model, caplog):
    """BERT in transformers 5.23 under sdpa: the argument logs a warning and gives an empty tuple; setting the config
    flag raises (it needs eager). CA-MTL does the same."""
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    ).eval()
    inputs = make_inputs()
    with torch.no_grad():
        ours = model(**inputs, output_attentions=True).attentions
        theirs = bert(inputs["input_ids"], inputs["attention_mask"], output_attentions=True).attentions
    assert ours == theirs == ()
    for config in (model.config, bert.config):
        with pytest.raises(ValueError, match="output_attentions"):
            config.output_attentions = True


def test_hidden_states_argument_and_config_flag_agree(model):
    inputs = make_inputs()
    with torch.no_grad():
        by_argument = model(**inputs, output_hidden_states=True).hidden_states
        flagged = copy.deepcopy(model)
        flagged.config.output_hidden_states = True
        by_config = flagged(**inputs).hidden_states
        last = model.bert(**inputs).last_hidden_state
    assert len(by_argument) == 3  # the aligned embeddings and each layer's output
    for a, b in zip(by_argument, by_config):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(by_argument[-1], last)


# ----- inputs_embeds ------------------------------------------------------------------------------------------------
def test_inputs_embeds_replace_input_ids(model):
    inputs = make_inputs()
    embeds = model.get_input_embeddings()(inputs["input_ids"])  # (B, T, H)
    from_embeds = {k: v for k, v in inputs.items() if k != "input_ids"}
    with torch.no_grad():
        expected = model(**inputs, labels=make_labels(inputs["task_ids"]))
        got = model(**from_embeds, inputs_embeds=embeds, labels=make_labels(inputs["task_ids"]))
        encoder = model.bert(**from_embeds, inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)
    torch.testing.assert_close(encoder, model.bert(**inputs).last_hidden_state)
    # prompt-tuning style: virtual tokens prepended as embeddings, a longer mask; the gradient reaches them
    prompt = torch.zeros(6, 3, 32, requires_grad=True)
    longer = dict(
        from_embeds,
        attention_mask=torch.cat([torch.ones(6, 3, dtype=torch.long), inputs["attention_mask"]], 1),
        token_type_ids=torch.cat([torch.zeros(6, 3, dtype=torch.long), inputs["token_type_ids"]], 1),
    )
    model(**longer, inputs_embeds=torch.cat([prompt, embeds.detach()], 1)).logits.sum().backward()
    assert prompt.grad.abs().sum() > 0


@pytest.mark.parametrize("which", ["both", "neither", "bad shape"])
def test_inputs_embeds_misuse_is_refused(model, which):
    inputs = make_inputs()
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    if which == "neither":
        inputs.pop("input_ids")
        embeds = None
    elif which == "bad shape":
        inputs.pop("input_ids")
        embeds = embeds[..., :5]
    match = "inputs_embeds must have shape" if which == "bad shape" else "exactly one of input_ids"
    with pytest.raises(ValueError, match=match):
        model.bert(**inputs, inputs_embeds=embeds)


# ----- finite logits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_are_finite_and_foreign_columns_get_probability_zero(model, dtype):
    inputs = make_inputs()
    with torch.no_grad():
        logits = model.to(dtype)(**inputs).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    sizes = torch.tensor([2, 1, 3])[inputs["task_ids"]]  # (B,)
    foreign = torch.arange(3)[None, :] >= sizes[:, None]  # (B, K)
    assert (logits[foreign] == torch.finfo(dtype).min).all()
    probs = logits.float().softmax(-1)
    assert (probs[foreign] == 0).all()
    assert (logits.argmax(-1) < sizes).all()


# ----- config fields a sequence classifier honours -----------------------------------------------------------------
def test_num_labels_and_problem_type_are_derived_from_the_tasks():
    config = tiny_config()
    assert config.num_labels == 3 and config.problem_type is None  # mixed kinds
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    single = tiny_config(tasks=[TASKS[2]])
    assert single.num_labels == 3 and single.problem_type == "single_label_classification"
    assert single.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert single.label2id["neutral"] == 1
    assert tiny_config(tasks=[TASKS[1]]).problem_type == "regression"
    model = CaMtlForMultiTask(tiny_config())
    assert model(**make_inputs()).logits.shape[1] == model.config.num_labels
    model.add_task({"name": "four", "labels": ["a", "b", "c", "d"]})
    assert model.config.num_labels == 4 == model(**make_inputs()).logits.shape[1]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"num_labels": 42}, "num_labels=42"),
        ({"problem_type": "regression"}, "problem_type='regression'"),
        ({"problem_type": "multi_label_classification", "tasks": [TASKS[0]]}, "problem_type"),
        ({"id2label": {0: "a", 1: "b", 2: "c"}}, "id2label"),
    ],
)
def test_contradicting_classifier_fields_are_refused(overrides, field):
    with pytest.raises(ValueError, match=f"{field}.*contradicts the tasks.*change the tasks"):
        tiny_config(**overrides)


def test_contradicting_fields_are_refused_after_construction_and_at_load(tmp_path):
    config = tiny_config()
    for key, value in (("num_labels", 42), ("problem_type", "regression"), ("id2label", {0: "x"})):
        with pytest.raises(ValueError, match="contradicts the tasks"):
            setattr(config, key, value)
    config.num_labels = 3  # agreeing is fine
    model = CaMtlForMultiTask(config)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels=42 contradicts the tasks"):
        CaMtlForMultiTask.from_pretrained(tmp_path, num_labels=42, ignore_mismatched_sizes=True)
    assert CaMtlConfig.from_pretrained(tmp_path).to_dict()["id2label"] == config.to_dict()["id2label"]


def test_an_older_generic_label_map_is_rederived():
    """Configs saved before the fields were derived hold transformers' default two-label map: re-derived, not
    refused."""
    config = tiny_config(id2label={0: "LABEL_0", 1: "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1})
    assert config.num_labels == 3


def test_encoder_alone_returns_attentions_and_hidden_states():
    torch.manual_seed(0)
    encoder = CaMtlModel(tiny_config()).eval()
    encoder.set_attn_implementation("eager")
    with torch.no_grad():
        out = encoder(**make_inputs(), output_attentions=True, output_hidden_states=True)
        as_tuple = encoder(**make_inputs(), output_attentions=True, output_hidden_states=True, return_dict=False)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    assert len(as_tuple) == 4  # last_hidden_state, pooler_output, hidden_states, attentions
