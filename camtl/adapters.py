"""Adapter checkpoints, as PEFT does them: only the trained parameters (safetensors) plus a small config naming the
base model. Loading rebuilds CA-MTL on the base (a BERT folder or Hub id) and puts the trained parameters back.

    model.set_trainable("adapters")          # the whole backbone frozen
    ... train ...
    save_adapter(model, "my-adapter", base_model="sentence-transformers/all-MiniLM-L6-v2")
    model = load_adapter("my-adapter")       # or load_adapter("my-adapter", base_model="/local/minilm")
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from modeling_camtl import CAMTL_KNOBS, CaMtlConfig, CaMtlForMultiTask

from .weights import naming_damaged_weights

ADAPTER_CONFIG_NAME = "camtl_adapter_config.json"
ADAPTER_WEIGHTS_NAME = "camtl_adapter.safetensors"
FORMAT_VERSION = 1
# what must match between the base the adapter was trained on and the base it is loaded onto
BASE_SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
# the config fields that describe CA-MTL itself (not the base encoder)
CAMTL_FIELDS = ("tasks", *CAMTL_KNOBS)


def base_fingerprint(model: CaMtlForMultiTask) -> str:
    """sha256 of the base word embeddings: tells two bases of the same shape apart."""
    weight = model.get_base_model().embeddings.word_embeddings.weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


def adapter_state_dict(model: CaMtlForMultiTask) -> dict:
    """The trained parameters: those with ``requires_grad`` (see ``model.set_trainable``)."""
    state = {
        name: param.detach().to("cpu").contiguous() for name, param in model.named_parameters() if param.requires_grad
    }
    if not state:
        raise ValueError("No trainable parameters to save: call model.set_trainable(...) first")
    return state


def _in_rebuilt_layer(name: str, config: CaMtlConfig) -> bool:
    """Whether ``name`` is a BERT parameter of a layer that ``from_bert`` re-initialises (``reinit_adapter_layers``)."""
    if not (config.reinit_adapter_layers and config.conditional_adapter) or "camtl_" in name:
        return False
    return any(f"encoder.layer.{i}." in name for i in config.adapter_layer_ids)


def save_adapter(model: CaMtlForMultiTask, folder: str | Path, base_model: str | None = None) -> Path:
    """Write the trained parameters and ``camtl_adapter_config.json`` (base model id, its shape and fingerprint, the
    CA-MTL config) into ``folder``. ``base_model`` defaults to the path the model was built from."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    base_model = base_model or config._name_or_path
    if not base_model:
        raise ValueError("save_adapter needs base_model (the BERT checkpoint id or folder the model was built from)")
    state = adapter_state_dict(model)
    rebuilt = [name for name, _ in model.named_parameters() if _in_rebuilt_layer(name, config) and name not in state]
    if rebuilt:
        raise ValueError(
            f"The adapter layers were re-initialised (reinit_adapter_layers) and {len(rebuilt)} of their "
            f"parameters are frozen (e.g. {rebuilt[0]}): an adapter file cannot rebuild them from the base. "
            "Save the whole model with save_pretrained, or train them (set_trainable('paper'))."
        )
    save_file(state, str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    adapter_config = {
        "format_version": FORMAT_VERSION,
        "base_model_name_or_path": str(base_model),
        "base_shape": {field: getattr(config, field) for field in BASE_SHAPE_FIELDS},
        "base_fingerprint": base_fingerprint(model),
        "camtl_config": {field: getattr(config, field) for field in CAMTL_FIELDS},
        "parameters": sorted(state),
        "num_parameters": sum(t.numel() for t in state.values()),
    }
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(adapter_config, indent=2) + "\n")
    return folder


def read_adapter_config(folder: str | Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No CA-MTL adapter in {folder}: {ADAPTER_CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Corrupt adapter config {path}: {err}") from err
    missing = {"format_version", "base_model_name_or_path", "base_shape", "camtl_config", "parameters"} - set(config)
    if missing:
        raise ValueError(f"Corrupt adapter config {path}: missing {sorted(missing)}")
    if config["format_version"] > FORMAT_VERSION:
        raise ValueError(f"Adapter format {config['format_version']} is newer than this camtl ({FORMAT_VERSION})")
    return config


def check_base(adapter_config: dict, base_model: str) -> None:
    """Refuse a base whose shape differs from the one the adapter was trained on, naming the fields."""
    base = AutoConfig.from_pretrained(base_model)
    expected = adapter_config["base_shape"]
    wrong = {f: (expected[f], getattr(base, f, None)) for f in expected if getattr(base, f, None) != expected[f]}
    if wrong:
        details = ", ".join(f"{f}: adapter expects {e}, base has {g}" for f, (e, g) in wrong.items())
        raise ValueError(
            f"Base model {base_model} does not match this adapter ({details}). The adapter was trained "
            f"on {adapter_config['base_model_name_or_path']}"
        )


def load_adapter(
    folder: str | Path, base_model: str | None = None, check_fingerprint: bool = True, **load_kwargs
) -> CaMtlForMultiTask:
    """Rebuild a CA-MTL model from an adapter folder on its base (``base_model`` overrides the recorded one).

    Raises ``ValueError`` for a base of another shape (hidden size, vocabulary ...), a base with other weights
    (fingerprint, unless ``check_fingerprint=False``), or an adapter file that is corrupt or does not match its
    config."""
    folder = Path(folder)
    adapter_config = read_adapter_config(folder)
    base_model = str(base_model or adapter_config["base_model_name_or_path"])
    check_base(adapter_config, base_model)
    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"No CA-MTL adapter weights in {folder}: {ADAPTER_WEIGHTS_NAME} is missing")
    with naming_damaged_weights(weights):
        state = load_file(str(weights))
    if sorted(state) != adapter_config["parameters"]:
        raise ValueError(
            f"Adapter weights in {folder} do not match its config: "
            f"{len(state)} tensors, config lists {len(adapter_config['parameters'])}"
        )
    with naming_damaged_weights(base_model):
        model = CaMtlForMultiTask.from_bert(
            base_model,
            tasks=adapter_config["camtl_config"]["tasks"],
            **{k: v for k, v in adapter_config["camtl_config"].items() if k != "tasks"},
            **load_kwargs,
        )
    if check_fingerprint and adapter_config.get("base_fingerprint") not in (None, base_fingerprint(model)):
        raise ValueError(
            f"Base model {base_model} has the right shape but other weights than the base this adapter "
            f"was trained on ({adapter_config['base_model_name_or_path']}); pass "
            "check_fingerprint=False to load it anyway"
        )
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"Adapter weights name parameters the model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            if own[name].shape != tensor.shape:
                raise ValueError(
                    f"Adapter tensor {name} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}"
                )
            own[name].copy_(tensor)
    return model
