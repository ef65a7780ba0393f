"""CA-MTL: Conditionally Adaptive Multi-Task Learning (Pilault, El hattami and Pal, ICLR 2021, arXiv 2009.09139).

One BERT-layout encoder serves many tasks. A learned task embedding ``z`` (and its transformation ``c``) drives small
generators that condition the encoder per example:

    x   = FiLM_c(Embeddings(tokens))                                  # conditional alignment
    A   = softmax(Q K^T / sqrt(d) + M(c) + mask) V                    # conditional attention, M block-diagonal
    h   = CLN_c(x + A)                                                # conditional layer norm (gain modulated by c)
    y   = CLN_c(h + FFN(h) + Adapter_c(FFN(h)))                       # conditional bottleneck adapter (top layer)

Every generator starts at zero, so a freshly built model computes exactly what its BERT checkpoint computes.
The config switches each departure of ours from the authors' code to their design (``CAMTL_PRESETS["authors"]``,
README "Departures from the paper and the authors' code"): the layers with conditional attention, the block layout,
the task transformation and what the alignment reads, the layer-norm gain's FiLM, and the adapter
(``adapter_style="replace"``: ``y = CLN_c(up(down(FiLM_c(CLN_c(h + FFN(h))))) + h)``, not the identity at init).
Conditioning is gathered per example (``task_embedding[task_ids]``): a batch may mix tasks freely, with no Python
loop over the tasks of a batch and no host synchronisation for it.

Adding a task later (``add_task``, optionally ``add_task_adapters``): per-task weights live in ``CaMtlTaskTable``s
(the task embedding, and ``CaMtlTaskAdapter``'s ``y = h + up_t(act(down_t(h)))`` on a layer's output for the rows of
an adapted task only, ``h`` exactly for every other row). ``set_trainable("tasks", tasks=[name])`` holds the new
task's rows apart as Parameters of their own, so the old tasks' outputs stay bit-identical under any optimizer.

Parameter names follow BERT (``bert.encoder.layer.N.attention.self.query`` ...) so any BERT checkpoint loads with
only the new parameters missing; every new parameter's name contains ``camtl_`` and the task heads live in
``heads.<task name>``.

This file travels with every checkpoint (``trust_remote_code``), with the two files it imports besides the standard
library, torch and transformers: ``configuration_camtl.py`` (the config) and ``pipeline_camtl.py`` (whose files
``save_pretrained`` writes, so ``pipeline(model=folder, trust_remote_code=True)`` works).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_camtl import BERT_FIELDS, CAMTL_PRESETS, CaMtlConfig, normalize_task_spec, task_num_outputs
from .pipeline_camtl import save_pipeline_files

AUTO_MAP = {
    "AutoConfig": "configuration_camtl.CaMtlConfig",
    "AutoModel": "modeling_camtl.CaMtlModel",
    "AutoModelForSequenceClassification": "modeling_camtl.CaMtlForMultiTask",
}


# --------------------------------------------------------------------------------------------------------------------
# Conditioning building blocks
# --------------------------------------------------------------------------------------------------------------------
class CaMtlGenerator(nn.Module):
    """A linear map from the task conditioning ``c`` (B, C) to per-example modulation parameters (B, out).

    Its own class (not ``nn.Linear``) so that initialisation can start it at zero without touching BERT's Linears.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return F.linear(cond, self.weight, self.bias)  # (B, out)


class CaMtlTaskTable(nn.Module):
    """A table of per-task rows ``weight`` (N, *row) gathered by index, whose rows can train on their own.

    ``separate(rows)`` makes those rows Parameters of their own (``row_<i>``) and freezes ``weight``, so that
    ``requires_grad=False`` alone protects every other row whatever the optimizer does (decoupled weight decay,
    momentum, ...): no optimizer ever holds the tensor of the old rows. ``merge()`` folds them back. The state dict
    always holds the whole table under the one ordinary name ``weight`` (the separate rows folded in), so a
    checkpoint saved while rows are separate loads as an ordinary model.
    """

    def __init__(self, num_rows: int, *row_shape: int, init_std: float | None = None):
        super().__init__()
        self.init_std = init_std  # initialisation: N(0, init_std), zeros for 0, N(0, initializer_range) for None
        self.weight = nn.Parameter(torch.empty(num_rows, *row_shape))
        self.own_ids = nn.Buffer(torch.zeros(0, dtype=torch.long), persistent=False)  # (R,) rows held apart

    def own_rows(self) -> list:
        """The separate row Parameters, in the order of ``own_ids``."""
        return [self._parameters[f"row_{i}"] for i in self.own_ids.tolist()]

    def table(self) -> torch.Tensor:
        """The whole table (N, *row), the separate rows in their places (their gradient goes to them alone)."""
        if self.own_ids.numel() == 0:
            return self.weight
        return self.weight.index_copy(0, self.own_ids, torch.stack(self.own_rows()))  # (N, *row)

    def forward(self, index: torch.LongTensor) -> torch.Tensor:
        return self.table()[index]  # (B, *row)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the separate rows back into ``weight`` (trainable again if they were)."""
        if self.own_ids.numel() == 0:
            return
        trainable = any(p.requires_grad for p in self.own_rows())
        self.weight.copy_(self.table())
        for i in self.own_ids.tolist():
            del self._parameters[f"row_{i}"]
        self.own_ids = torch.zeros(0, dtype=torch.long, device=self.weight.device)
        self.weight.requires_grad_(trainable)

    @torch.no_grad()
    def separate(self, rows: list) -> list:
        """Hold ``rows`` apart as trainable Parameters of their own and freeze ``weight``; return those Parameters."""
        self.merge()
        for i in sorted(set(rows)):
            self.register_parameter(f"row_{i}", nn.Parameter(self.weight[i].clone()))
        self.own_ids = torch.tensor(sorted(set(rows)), dtype=torch.long, device=self.weight.device)
        self.weight.requires_grad_(False)
        return self.own_rows()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        table = self.table()
        destination[prefix + "weight"] = table if keep_vars else table.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        own = {name: self._parameters.pop(name) for name in list(self._parameters) if name != "weight"}
        try:
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # ``weight`` alone
        finally:
            self._parameters.update(own)
        with torch.no_grad():
            for i, row in zip(self.own_ids.tolist(), own.values()):
                row.copy_(self.weight[i])


class CaMtlTaskEncoder(nn.Module):
    """Task embedding ``z_i`` (a :class:`CaMtlTaskTable`, (num_tasks, C)) and its transformation ``c`` shared by every
    generator: ``c = z + MLP(z)`` (``task_transform="residual_mlp"``) or ``c = W z + b`` (``"linear"``, the
    authors')."""

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        d = config.task_embedding_dim
        self.embedding = CaMtlTaskTable(max(len(config.tasks), 1), d, init_std=config.task_embedding_init_std)
        self.linear = config.task_transform == "linear"
        if self.linear:
            self.transform = nn.Linear(d, d)
        else:
            self.dense_in = nn.Linear(d, d)
            self.dense_out = nn.Linear(d, d)

    def forward(self, task_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, c)``: the embedding and its transformation, (B, C) each."""
        z = self.embedding(task_ids)  # (B, C)
        if self.linear:
            return z, self.transform(z)  # (B, C)
        return z, z + self.dense_out(F.gelu(self.dense_in(z)))  # (B, C)


class CaMtlFiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)`` (conditional alignment)."""

    def __init__(self, cond_dim: int, features: int):
        super().__init__()
        self.generator = CaMtlGenerator(cond_dim, 2 * features)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.generator(cond).unsqueeze(1).chunk(2, dim=-1)  # 2 x (B, 1, H)
        return torch.addcmul(beta, x, 1 + gamma)  # (B, T, H): x * (1 + gamma) + beta in one pass over x


class CaMtlBlockDiagonalBias(nn.Module):
    """Task-conditioned block-diagonal additive bias ``M(c)`` on the attention scores (conditional attention).

    ``N`` learned blocks ``A_n`` of size ``S x S`` cover ``span = N * S`` positions; each is modulated per key column by
    a FiLM of the task conditioning: ``A'_n = A_n * (1 + gamma_n(c)) + beta_n(c)``. Position ``p`` lies in block
    ``(p // S) % N`` at offset ``p % S``: inputs of any length (dynamic padding) get the slice of the same bias that a
    padded-to-max input would use, and positions past the span reuse the blocks cyclically.
    ``conditional_attention_film="shared"`` (the authors'): one ``gamma, beta`` of size ``S`` for every block.
    """

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.num_blocks = config.conditional_attention_blocks
        self.block_size = config.attention_block_size
        self.shared_film = config.conditional_attention_film == "shared"
        self.blocks = nn.Parameter(torch.zeros(self.num_blocks, self.block_size, self.block_size))  # (N, S, S)
        film_size = self.block_size if self.shared_film else self.num_blocks * self.block_size
        self.generator = CaMtlGenerator(config.task_embedding_dim, 2 * film_size)

    def forward(self, cond: torch.Tensor, seq_len: int, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``M(c)`` (B, T, T), zero off the diagonal blocks; plus ``additive_mask`` (B, 1, T) when given (the padding
        mask, folded in here so the (B, T, T) result is written in two passes: one per ``addcmul``)."""
        bsz = cond.shape[0]
        pos = torch.arange(seq_len, device=cond.device)  # (T,)
        block_of = pos // self.block_size  # (T,) diagonal block of each position
        same_block = block_of[:, None] == block_of[None, :]  # (T, T)
        row = pos % (self.num_blocks * self.block_size)  # (T,) row in the stacked blocks (N*S, S): block, offset
        offset = row % self.block_size  # (T,) offset inside its block
        base = self.blocks.view(-1, self.block_size)[row[:, None], offset[None, :]] * same_block  # (T, T)
        film_of = offset if self.shared_film else row  # (T,) the FiLM entry of each key column
        gamma, beta = self.generator(cond).view(bsz, 2, -1)[:, :, film_of].unbind(1)  # 2 x (B, T): per key column
        scale = 1 + gamma[:, None, :]  # (B, 1, T)
        bias = base * scale if additive_mask is None else torch.addcmul(additive_mask, base, scale)  # (B, T, T)
        return bias.addcmul_(same_block, beta[:, None, :])  # (B, T, T): + beta on the diagonal blocks only


class CaMtlConditionalLayerNorm(nn.Module):
    """Layer norm whose gain ``w`` is modulated by the task, BERT's weight and bias kept: ``LN(x) * w * (1 + g(c)) + b``
    (``conditional_layer_norm_gain="scale"``), or a FiLM of the gain ``LN(x) * (w * (1 + g(c)) + beta(c)) + b``
    (``"film"``, the authors')."""

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.film = config.conditional_layer_norm_gain == "film"
        self.generator = CaMtlGenerator(config.task_embedding_dim, config.hidden_size * (2 if self.film else 1))

    def forward(self, x: torch.Tensor, layer_norm: nn.LayerNorm, cond: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, layer_norm.normalized_shape, None, None, layer_norm.eps)  # (B, T, H)
        if self.film:
            gamma, beta = self.generator(cond).unsqueeze(1).chunk(2, dim=-1)  # 2 x (B, 1, H)
            gain = torch.addcmul(beta, layer_norm.weight, 1 + gamma)  # (B, 1, H): w * (1 + gamma) + beta
        else:
            gain = layer_norm.weight * (1 + self.generator(cond)).unsqueeze(1)  # (B, 1, H)
        return torch.addcmul(layer_norm.bias, normed, gain)  # (B, T, H): normed * gain + bias in one pass


class CaMtlZeroLinear(nn.Linear):
    """A Linear that starts at zero (the adapter's up-projection), so the adapter starts as the identity."""


class CaMtlAdapter(nn.Module):
    """Conditional bottleneck adapter: ``up(act(FiLM_c(down(h))))``, ``up`` starts at zero (identity at init)."""

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.down = nn.Linear(config.hidden_size, config.adapter_size)
        self.film = CaMtlFiLM(config.task_embedding_dim, config.adapter_size)
        self.act = ACT2FN[config.hidden_act]
        self.up = CaMtlZeroLinear(config.adapter_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.film(self.down(hidden_states), cond)))  # (B, T, H)


class CaMtlReplacingAdapter(nn.Module):
    """The authors' adapter (``adapter_style="replace"``): on the layer's output ``y`` and its attention output ``h``,
    ``CLN_c'(up(down(FiLM_c'(y))) + h)`` with ``c' = W c + b``, a linear bottleneck (no activation) and a new layer norm
    (weight 1, bias 0; conditional when ``conditional_layer_norm``). It replaces the FFN residual, so the layer is not
    BERT's at initialisation, whatever the weights."""

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.task_transform = nn.Linear(config.task_embedding_dim, config.task_embedding_dim)
        self.film = CaMtlFiLM(config.task_embedding_dim, config.hidden_size)
        self.down = nn.Linear(config.hidden_size, config.adapter_size)
        self.up = nn.Linear(config.adapter_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conditional_layer_norm = CaMtlConditionalLayerNorm(config) if config.conditional_layer_norm else None

    def forward(self, layer_output: torch.Tensor, attention_output: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        adapted = self.up(self.down(self.film(layer_output, self.task_transform(cond))))  # (B, T, H)
        adapted = adapted + attention_output  # (B, T, H): the residual of the attention output, not of y
        if self.conditional_layer_norm is None:
            return self.LayerNorm(adapted)
        return self.conditional_layer_norm(adapted, self.LayerNorm, cond)  # (B, T, H)


class CaMtlTaskAdapter(nn.Module):
    """Per-task bottleneck adapters of the tasks in ``config.task_adapter_tasks`` (slot ``s`` = its position there),
    on a layer's output ``h``: ``y = h + up_s(act(down_s(h)))`` for the rows of an adapted task, ``y = h`` exactly for
    every other row. Each weight is a :class:`CaMtlTaskTable` with one row per slot, gathered by each row's slot: a
    mixed batch is one pair of batched matmuls. ``up`` starts at zero (identity at init), and
    ``set_trainable("tasks")`` holds the trained tasks' slots apart as it does their task embeddings.
    """

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        slots, hidden, size = len(config.task_adapter_tasks), config.hidden_size, config.task_adapter_size
        self.down = CaMtlTaskTable(slots, hidden, size)  # (A, H, r), N(0, initializer_range)
        self.down_bias = CaMtlTaskTable(slots, size, init_std=0.0)  # (A, r)
        self.up = CaMtlTaskTable(slots, size, hidden, init_std=0.0)  # (A, r, H), zero: the identity at init
        self.up_bias = CaMtlTaskTable(slots, hidden, init_std=0.0)  # (A, H)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor, slot: torch.LongTensor) -> torch.Tensor:
        """``hidden_states`` (B, T, H); ``slot`` (B,) each row's adapter slot, -1 for a task without one."""
        index = slot.clamp(min=0)  # (B,) rows without an adapter read slot 0, then keep h below
        down = torch.baddbmm(self.down_bias(index).unsqueeze(1), hidden_states, self.down(index))  # (B, T, r)
        delta = torch.baddbmm(self.up_bias(index).unsqueeze(1), self.act(down), self.up(index))  # (B, T, H)
        return torch.where((slot >= 0)[:, None, None], hidden_states + delta, hidden_states)  # (B, T, H)


# --------------------------------------------------------------------------------------------------------------------
# BERT-layout encoder with the conditional modules
# --------------------------------------------------------------------------------------------------------------------
class CaMtlEmbeddings(nn.Module):
    """BERT's embeddings (word, position, token type, LayerNorm, dropout), same parameter names."""

    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(
        self,
        input_ids: torch.LongTensor | None,
        token_type_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``inputs_embeds`` (B, T, H), when given, replaces the word embeddings of ``input_ids``, as in BERT."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, H)
        seq_len = inputs_embeds.shape[1]
        position_ids = self.position_ids[:, :seq_len]  # (1, T)
        x = inputs_embeds + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)  # (B, T, H)
        return self.dropout(self.LayerNorm(x))


#: Attention backends of transformers' registry that take an additive float bias: the conditional layers pass their
#: block bias ``M(c)`` plus the padding as the additive mask (B, 1, T, T) (eager, sdpa), or ``M(c)`` as flex
#: attention's ``position_bias``. Others (flash attention: a padding mask only) cannot; a model with conditional
#: attention refuses them with a ``ValueError``.
BIAS_ATTENTION_BACKENDS = ("eager", "sdpa", "flex_attention")


def check_attention_backend(config: CaMtlConfig, attn_implementation: str | None) -> None:
    """``ValueError`` when ``attn_implementation`` cannot carry the conditional attention bias of ``config``'s model."""
    conditional = config.conditional_attention and config.conditional_attention_layer_ids
    if conditional and attn_implementation is not None and attn_implementation not in BIAS_ATTENTION_BACKENDS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} cannot take CA-MTL's conditional attention bias (an additive "
            f"(batch, 1, T, T) mask, in layers {config.conditional_attention_layer_ids}): use one of "
            f"{list(BIAS_ATTENTION_BACKENDS)}, or a config without conditional attention (conditional_attention=False)"
        )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """BERT's eager attention: ``softmax(Q K^T * scaling + mask) V``. Returns the context (B, T, nh, hs) and the
    attention probabilities (B, nh, T, T)."""
    scores = (query @ key.transpose(2, 3)) * scaling  # (B, nh, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask  # additive: padding (and M(c) in the conditional layers)
    probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)  # (B, nh, T, T)
    return (probs @ value).transpose(1, 2).contiguous(), probs


class CaMtlSelfAttention(nn.Module):
    """BERT's self-attention through transformers' attention registry (``config._attn_implementation``: eager, sdpa,
    flex attention, ...). A conditional layer adds ``M(c)`` to the scores by passing ``M(c) + padding`` as the
    additive mask. Returns the context (B, T, H) and the attention probabilities (eager; None elsewhere)."""

    def __init__(self, config: CaMtlConfig, conditional: bool):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.is_causal = False  # read by transformers' sdpa: without it, an unpadded batch would be causal
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.camtl_block_bias = CaMtlBlockDiagonalBias(config) if conditional else None

    def forward(self, hidden_states, attention_mask, padding_bias, cond, **kwargs):
        """``attention_mask``: the backend's mask (``create_bidirectional_mask``) or None; ``padding_bias`` (B, 1, T)
        additive padding (0 or the dtype's minimum) or None, which the conditional layers fold into ``M(c)``."""
        bsz, seq_len, _ = hidden_states.shape
        shape = (bsz, seq_len, self.num_heads, self.head_size)
        q = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hs)
        implementation = self.config._attn_implementation
        if self.camtl_block_bias is not None:  # (the backend was checked by CaMtlModel.forward)
            if implementation == "flex_attention":
                # flex's additive-mask path crashes in torch 2.13's CPU kernels (it indexes the mask as m[b][0][q][k]):
                # M(c) goes as its additive position_bias (B, nh, T, T) instead, the padding stays in its BlockMask
                bias = self.camtl_block_bias(cond, seq_len).unsqueeze(1).to(q.dtype)  # (B, 1, T, T)
                kwargs["position_bias"] = bias.expand(-1, self.num_heads, -1, -1)  # (B, nh, T, T), a view
            else:
                attention_mask = (
                    self.camtl_block_bias(cond, seq_len, padding_bias).unsqueeze(1).to(q.dtype)
                )  # (B,1,T,T)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, probs = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # (B, T, nh, hs)
        return context.reshape(bsz, seq_len, -1), probs  # (B, T, H), (B, nh, T, T) or None


class CaMtlSelfOutput(nn.Module):
    def __init__(self, config: CaMtlConfig, conditional: bool):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.camtl_layer_norm = CaMtlConditionalLayerNorm(config) if conditional else None

    def forward(self, hidden_states, input_tensor, cond):
        hidden_states = input_tensor + self.dropout(self.dense(hidden_states))  # (B, T, H)
        if self.camtl_layer_norm is None:
            return self.LayerNorm(hidden_states)
        return self.camtl_layer_norm(hidden_states, self.LayerNorm, cond)


class CaMtlAttention(nn.Module):
    def __init__(self, config: CaMtlConfig, conditional_attention: bool, conditional_layer_norm: bool):
        super().__init__()
        self.self = CaMtlSelfAttention(config, conditional_attention)
        self.output = CaMtlSelfOutput(config, conditional_layer_norm)

    def forward(self, hidden_states, attention_mask, padding_bias, cond, **kwargs):
        context, _ = self.self(hidden_states, attention_mask, padding_bias, cond, **kwargs)  # (B, T, H)
        return self.output(context, hidden_states, cond)


class CaMtlIntermediate(nn.Module):
    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))  # (B, T, I)


class CaMtlOutput(nn.Module):
    def __init__(self, config: CaMtlConfig, conditional: bool, adapter: bool):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.camtl_layer_norm = CaMtlConditionalLayerNorm(config) if conditional else None
        self.replacing_adapter = adapter and config.adapter_style == "replace"
        adapter_class = CaMtlReplacingAdapter if self.replacing_adapter else CaMtlAdapter
        self.camtl_adapter = adapter_class(config) if adapter else None

    def forward(self, hidden_states, input_tensor, cond):
        hidden_states = self.dropout(self.dense(hidden_states))  # (B, T, H)
        if self.camtl_adapter is not None and not self.replacing_adapter:
            hidden_states = hidden_states + self.camtl_adapter(hidden_states, cond)
        hidden_states = hidden_states + input_tensor
        if self.camtl_layer_norm is None:
            hidden_states = self.LayerNorm(hidden_states)
        else:
            hidden_states = self.camtl_layer_norm(hidden_states, self.LayerNorm, cond)  # (B, T, H)
        if self.replacing_adapter:
            return self.camtl_adapter(hidden_states, input_tensor, cond)  # (B, T, H)
        return hidden_states


class CaMtlLayer(GradientCheckpointingLayer):
    def __init__(self, config: CaMtlConfig, layer_idx: int):
        super().__init__()
        layer_norm = config.conditional_layer_norm and layer_idx in config.conditional_layer_ids
        attention = config.conditional_attention and layer_idx in config.conditional_attention_layer_ids
        adapter = config.conditional_adapter and layer_idx in config.adapter_layer_ids
        self.attention = CaMtlAttention(config, attention, layer_norm)
        self.intermediate = CaMtlIntermediate(config)
        self.output = CaMtlOutput(config, layer_norm, adapter)
        self.chunk_size_feed_forward = config.chunk_size_feed_forward  # 0: no chunking (BERT's memory knob)
        self.camtl_task_adapter = CaMtlTaskAdapter(config) if layer_idx in config.task_adapter_layer_ids else None

    def forward(self, hidden_states, attention_mask, padding_bias, cond, adapter_slot=None, **kwargs):
        attention_output = self.attention(hidden_states, attention_mask, padding_bias, cond, **kwargs)  # (B, T, H)
        if not self.chunk_size_feed_forward:
            layer_output = self.feed_forward(attention_output, cond)  # (B, T, H)
        else:  # as BERT's apply_chunking_to_forward: the position-wise feed-forward in slices of the sequence
            chunks = attention_output.split(self.chunk_size_feed_forward, dim=1)  # n x (B, <=chunk, H)
            layer_output = torch.cat([self.feed_forward(chunk, cond) for chunk in chunks], dim=1)  # (B, T, H)
        if self.camtl_task_adapter is not None:
            layer_output = self.camtl_task_adapter(layer_output, adapter_slot)  # (B, T, H): + the row's own adapter
        return layer_output

    def feed_forward(self, attention_output, cond):
        return self.output(self.intermediate(attention_output), attention_output, cond)  # (B, T, H)


class CaMtlEncoder(nn.Module):
    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.layer = nn.ModuleList([CaMtlLayer(config, i) for i in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask, padding_bias, cond, adapter_slot=None, **kwargs):
        for layer in self.layer:  # tensors positional, for gradient checkpointing
            hidden_states = layer(hidden_states, attention_mask, padding_bias, cond, adapter_slot, **kwargs)
        return hidden_states  # (B, T, H)


class CaMtlPooler(nn.Module):
    def __init__(self, config: CaMtlConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))  # (B, H)


TRAINABLE_MODES = ("paper", "adapters", "all", "tasks")


#: Keyword arguments the forward passes on (to the output capture and the attention functions) besides its own.
PASSED_ON_KWARGS = ("output_attentions", "output_hidden_states")


def _refuse_unused(kwargs: dict) -> dict:
    """TypeError for a keyword argument that the forward would not use; returns the ones it passes on
    (``PASSED_ON_KWARGS``). Generic callers (PEFT's wrappers, pipelines) pass transformers' usual arguments
    (``position_ids``, ``head_mask``, ...) as None: those are accepted."""
    used = sorted(k for k, v in kwargs.items() if v is not None and k not in PASSED_ON_KWARGS)
    if used:
        raise TypeError(
            f"CA-MTL's forward does not use {used}; it takes input_ids or inputs_embeds, attention_mask, "
            "token_type_ids, task_ids, labels (CaMtlForMultiTask), output_attentions, "
            "output_hidden_states and return_dict."
        )
    return {k: v for k, v in kwargs.items() if k in PASSED_ON_KWARGS and v is not None}


def per_example_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_regression: torch.Tensor,
    multi_hot: torch.Tensor | None = None,
    is_multi_label: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each row's loss, in float32: cross-entropy for a classification row, squared error of column 0 for a regression
    row, and for a multi-label row (``is_multi_label``, with its targets in ``multi_hot``) the binary cross-entropy of
    each of its labels' sigmoid, averaged over its labels. ``logits`` (B, K) with the dtype's minimum past a row's
    labels; ``labels`` (B,) class ids (as floats) or targets (anything on multi-label rows); ``is_regression`` (B,)
    bool; ``multi_hot`` (B, K) targets in [0, 1] (read on multi-label rows only, over their own columns).
    Returns (B,)."""
    targets = torch.where(is_regression, torch.zeros_like(labels), labels).long()  # (B,), 0 for regression rows
    if is_multi_label is not None:
        targets = torch.where(is_multi_label, torch.zeros_like(targets), targets)  # (B,)
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,)
    mse = (logits[:, 0].float() - labels.float()) ** 2  # (B,)
    loss = torch.where(is_regression, mse, ce)
    if is_multi_label is None:
        return loss
    own = logits > torch.finfo(logits.dtype).min  # (B, K) the row's own columns
    safe = torch.where(own, logits, torch.zeros_like(logits)).float()  # (B, K) no min in the BCE
    bce = F.binary_cross_entropy_with_logits(safe, multi_hot.float().clamp(0, 1), reduction="none") * own  # (B, K)
    bce = bce.sum(-1) / own.sum(-1).clamp(min=1)  # (B,) mean over the row's labels
    return torch.where(is_multi_label, bce, loss)


def is_camtl_parameter(name: str) -> bool:
    """Whether parameter ``name`` is CA-MTL's own (a conditional module ``*camtl_*`` or a task head ``heads.*``): what
    a BERT checkpoint lacks."""
    return "camtl_" in name or name.startswith("heads.")


def _is_trainable(name: str, mode: str, config: CaMtlConfig) -> bool:
    """Whether parameter ``name`` trains in ``mode`` (see ``CaMtlPreTrainedModel.set_trainable``)."""
    name = name[len("bert.") :] if name.startswith("bert.") else name
    frozen_layer = name.startswith("encoder.layer.") and int(name.split(".")[2]) < config.frozen_layer_count
    attention_generator = ".camtl_block_bias.generator." in name
    if mode == "paper" and frozen_layer and attention_generator and config.frozen_attention_generators:
        return False  # the authors' rule: in a frozen layer only the attention's block matrices train
    if mode == "all" or is_camtl_parameter(name):
        return True
    if mode == "adapters":
        return False
    if name.startswith("embeddings."):
        return not config.freeze_embeddings
    return not frozen_layer


# --------------------------------------------------------------------------------------------------------------------
# Pretrained base, models, heads
# --------------------------------------------------------------------------------------------------------------------
class CaMtlPreTrainedModel(PreTrainedModel):
    config_class = CaMtlConfig
    config: CaMtlConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True  # only without conditional attention: see check_attention_backend
    _can_record_outputs = {"hidden_states": CaMtlLayer, "attentions": CaMtlSelfAttention}  # as BERT's
    _no_split_modules = ["CaMtlEmbeddings", "CaMtlLayer"]
    _keys_to_ignore_on_load_unexpected = [r"position_ids"]

    def _check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False, **kwargs):
        """transformers' check of a requested attention backend (``from_pretrained(attn_implementation=...)``,
        ``set_attn_implementation``), after CA-MTL's own: the conditional layers need an additive mask."""
        if attn_implementation in ALL_ATTENTION_FUNCTIONS.valid_keys():  # a name transformers knows: ours first
            check_attention_backend(self.config, attn_implementation)  # (before flash attention's import errors)
        applicable = super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, **kwargs)
        check_attention_backend(self.config, applicable)
        return applicable

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)  # BERT's: Linear/Embedding normal(initializer_range), LayerNorm (1, 0)
        if isinstance(module, CaMtlGenerator):
            init.normal_(module.weight, mean=0.0, std=self.config.generator_init_std)
            init.zeros_(module.bias)
        elif isinstance(module, CaMtlBlockDiagonalBias):
            init.zeros_(module.blocks)
        elif isinstance(module, CaMtlZeroLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CaMtlTaskTable):
            # a table's own std (the task embedding: config.task_embedding_init_std), else N(0, initializer_range)
            std = self.config.initializer_range if module.init_std is None else module.init_std
            if std > 0:
                init.normal_(module.weight, mean=0.0, std=std)
            else:
                init.zeros_(module.weight)
        elif isinstance(module, CaMtlModel):
            init.copy_(module.camtl_adapter_slot, module._adapter_slots())
        elif isinstance(module, CaMtlEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
        elif isinstance(module, CaMtlForMultiTask):
            module._init_task_buffers()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save config, weights and the modeling files (``auto_map`` for AutoConfig, AutoModel and
        AutoModelForSequenceClassification), the inference pipeline, and the tokenizer when one is attached
        (``model.tokenizer``)."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        save_pipeline_files(save_directory)  # `pipeline(model=folder, trust_remote_code=True)` works on the folder
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)

    # ----- task ids -----
    def task_id(self, task) -> int:
        """Id of a task given by name or id; ``ValueError`` naming the valid tasks otherwise."""
        return self.config.task_id(task)

    def _task_ids_tensor(self, task_ids, batch_size: int, device) -> torch.LongTensor:
        """Validate ``task_ids`` (a (B,) tensor, int, name, or list of ids/names) and return a (B,) LongTensor."""
        if task_ids is None:
            raise ValueError(
                f"task_ids is required: a LongTensor of shape ({batch_size},). "
                f"Valid tasks: {self.config.describe_tasks()}"
            )
        if isinstance(task_ids, (str, int)):
            task_ids = [task_ids] * batch_size
        if isinstance(task_ids, (list, tuple)):
            task_ids = torch.tensor([self.task_id(t) for t in task_ids], dtype=torch.long, device=device)
        if not isinstance(task_ids, torch.Tensor) or task_ids.dtype in (
            torch.float16,
            torch.bfloat16,
            torch.float32,
            torch.float64,
            torch.bool,
        ):
            raise ValueError(f"task_ids must be an integer tensor of shape ({batch_size},), got {task_ids!r}")
        if task_ids.shape != (batch_size,):
            raise ValueError(
                f"task_ids must have shape ({batch_size},) (one task per example), got {tuple(task_ids.shape)}"
            )
        task_ids = task_ids.to(device=device, dtype=torch.long)
        if not torch.compiler.is_compiling():
            bad = (task_ids < 0) | (task_ids >= len(self.config.tasks))
            if bad.any():
                raise ValueError(
                    f"Unknown task id(s) {sorted(set(task_ids[bad].tolist()))}. "
                    f"Valid tasks: {self.config.describe_tasks()}"
                )
        return task_ids

    def set_trainable(self, mode: str = "paper", tasks=None) -> dict:
        """Choose which parameters train, and return the counts ``{"trainable": n, "frozen": m}``.

        - ``"paper"`` (default, as in the paper): the embeddings (if ``config.freeze_embeddings``) and the lower
          ``config.frozen_layer_count`` layers are frozen; the upper layers, pooler, CA-MTL modules and heads train.
        - ``"adapters"`` (parameter-efficient): the whole pretrained backbone is frozen; only the CA-MTL modules
          (``camtl_*``: task embeddings and conditioning) and the task heads train.
        - ``"all"``: everything trains.
        - ``"tasks"`` (continual learning, with ``tasks=[names]``): only those tasks' own parameters train: their
          task-embedding rows (held apart as Parameters of their own, see :class:`CaMtlTaskTable`) and heads. Every
          other task's outputs stay bit-identical with any optimizer, weight decay and momentum included: nothing
          they use is trainable. Refused (``ValueError``) while every conditioning generator is zero: the rows would
          get no gradient.

        Any other mode folds held-apart rows back into their tables. Call it again after ``add_task`` or
        ``remove_task``.
        """
        if mode not in TRAINABLE_MODES:
            raise ValueError(f"Unknown trainable mode {mode!r}; valid modes: {list(TRAINABLE_MODES)}")
        if (mode == "tasks") != (tasks is not None):
            raise ValueError("set_trainable: pass tasks=[names] with mode='tasks', and only then")
        if mode == "tasks" and self._conditioning_is_inert():
            raise ValueError(
                "set_trainable('tasks') would train nothing but the heads: every conditioning generator of this model "
                "is zero (its CA-MTL modules were never trained), so a task-embedding row gets no gradient. Train the "
                "model with its CA-MTL modules first (set_trainable('paper') or 'adapters'), then add tasks."
            )
        for table in self.modules():
            if isinstance(table, CaMtlTaskTable):
                table.merge()
        own = set()
        if mode == "tasks":
            task_ids = [self.task_id(t) for t in tasks]
            heads = tuple(f"heads.{self.config.task_names[i]}." for i in task_ids)
            own = {id(p) for p in self._separate_task_rows(task_ids)}
        counts = {"trainable": 0, "frozen": 0}
        for name, param in self.named_parameters():
            if mode == "tasks":
                param.requires_grad = name.startswith(heads) or id(param) in own
            else:
                param.requires_grad = _is_trainable(name, mode, self.config)
            counts["trainable" if param.requires_grad else "frozen"] += param.numel()
        return counts

    def _separate_task_rows(self, task_ids: list) -> list:
        """Hold the rows of ``task_ids`` apart in every per-task table (the task embedding and each task adapter);
        return the new Parameters."""
        base = self.get_base_model()
        rows = base.camtl_task.embedding.separate(task_ids)
        names = [self.config.task_names[i] for i in task_ids]
        slots = [self.config.task_adapter_tasks.index(n) for n in names if n in self.config.task_adapter_tasks]
        if slots:
            for adapter in base.modules():
                if isinstance(adapter, CaMtlTaskAdapter):
                    for table in (adapter.down, adapter.down_bias, adapter.up, adapter.up_bias):
                        rows += table.separate(slots)
        return rows

    def _conditioning_is_inert(self) -> bool:
        """True when the model has conditioning generators and every one is zero: the outputs do not depend on the
        task embedding, whose gradient is then exactly zero (a fresh model's first step; see the README)."""
        weights = [m.weight for m in self.modules() if isinstance(m, CaMtlGenerator)]
        return bool(weights) and not any(torch.count_nonzero(w) for w in weights)

    def get_base_model(self):
        return getattr(self, self.base_model_prefix, self)

    def trainable_parameter_groups(self) -> dict:
        """Counts of parameters by role: BERT's, CA-MTL's conditional modules, task heads."""
        counts = {"bert": 0, "camtl": 0, "heads": 0}
        for name, param in self.named_parameters():
            role = "camtl" if "camtl_" in name else "heads" if name.startswith("heads.") else "bert"
            counts[role] += param.numel()
        return counts

    def _reinit_adapter_layers(self) -> None:
        """Re-initialise BERT's parameters of the adapter layers, as BERT's ``_init_weights`` would (the authors'
        top layer is new: ``reinit_adapter_layers``). CA-MTL's own modules keep their values."""
        encoder = self.get_base_model().encoder
        std = self.config.initializer_range
        with torch.no_grad():  # torch.nn.init: transformers' init functions skip the loaded (flagged) tensors
            for i in self.config.adapter_layer_ids:
                for name, module in encoder.layer[i].named_modules():
                    if "camtl_" in name:
                        continue
                    if isinstance(module, nn.Linear):
                        nn.init.normal_(module.weight, mean=0.0, std=std)
                        nn.init.zeros_(module.bias)
                    elif isinstance(module, nn.LayerNorm):
                        nn.init.ones_(module.weight)
                        nn.init.zeros_(module.bias)


class CaMtlModel(CaMtlPreTrainedModel):
    """The CA-MTL encoder: hidden states and pooled output, conditioned on each example's task.

    ``forward(input_ids, attention_mask, token_type_ids, task_ids)`` returns a ``BaseModelOutputWithPooling`` with
    ``last_hidden_state`` (B, T, H) and ``pooler_output`` (B, H); ``hidden_states`` (the aligned embeddings and each
    layer's output) and ``attentions`` (each layer's probabilities (B, nh, T, T)) when asked, by argument or config,
    as in BERT: ``output_attentions`` gives probabilities with eager attention; sdpa warns and gives an empty tuple;
    a config with ``output_attentions=True`` needs eager attention. ``inputs_embeds`` (B, T, H) may replace
    ``input_ids``, as in BERT.
    """

    _auto_class = "AutoModel"

    def __init__(self, config: CaMtlConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        if not config.tasks:
            raise ValueError(
                "config.tasks is empty: a CA-MTL model needs at least one task spec (name, kind, labels, text_fields)"
            )
        self.config = config
        self.embeddings = CaMtlEmbeddings(config)
        self.camtl_task = CaMtlTaskEncoder(config)
        self.camtl_alignment = (
            CaMtlFiLM(config.task_embedding_dim, config.hidden_size) if config.conditional_alignment else None
        )
        self.encoder = CaMtlEncoder(config)
        self.pooler = CaMtlPooler(config) if add_pooling_layer else None
        self.camtl_adapter_slot = nn.Buffer(self._adapter_slots(), persistent=False)  # (num_tasks,) -1: no adapter
        self.post_init()

    def _adapter_slots(self) -> torch.LongTensor:
        """(num_tasks,) each task's slot in the task adapters (``config.task_adapter_tasks``), -1 for none."""
        adapted = self.config.task_adapter_tasks
        return torch.tensor(
            [adapted.index(n) if n in adapted else -1 for n in self.config.task_names], dtype=torch.long
        )

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @capture_outputs  # hidden_states / attentions (argument or config) and return_dict, as in BERT
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        passed_on = _refuse_unused(kwargs)
        passed_on.pop("output_hidden_states", None)  # the layers' outputs are captured by hooks
        check_attention_backend(self.config, self.config._attn_implementation)  # also when set behind our back
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "Give exactly one of input_ids (batch, seq_len) and inputs_embeds (batch, seq_len, hidden_size)"
            )
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError("input_ids must be a LongTensor of shape (batch, seq_len)")
        if inputs_embeds is not None and (
            inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size
        ):
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, {self.config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        reference = input_ids if input_ids is not None else inputs_embeds
        bsz, seq_len = reference.shape[:2]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Input of {seq_len} tokens is longer than the model's limit of "
                f"{self.config.max_position_embeddings} positions: truncate it (tokenizer truncation=True)"
            )
        device = reference.device
        task_ids = self._task_ids_tensor(task_ids, bsz, device)  # (B,)
        if token_type_ids is None:
            token_type_ids = torch.zeros((bsz, seq_len), dtype=torch.long, device=device)
        if attention_mask is not None and attention_mask.shape != (bsz, seq_len):
            raise ValueError(
                f"attention_mask must have shape (batch, seq_len) {(bsz, seq_len)}, got {tuple(attention_mask.shape)}"
            )

        task_embedding, cond = self.camtl_task(task_ids)  # (B, C) each: z and its transformation c
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, T, H)
        if self.camtl_alignment is not None:
            hidden = self.camtl_alignment(hidden, task_embedding if self.config.alignment_input == "raw" else cond)
        backend_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=attention_mask
        )  # the backend's own form, or None
        padding_bias = None  # (B, 1, T) additive, for the conditional layers' M(c) + padding
        if attention_mask is not None:
            dtype = hidden.dtype
            padding_bias = (1.0 - attention_mask[:, None, :].to(dtype)) * torch.finfo(dtype).min
        adapter_slot = self.camtl_adapter_slot[task_ids] if self.config.task_adapter_tasks else None  # (B,)
        hidden = self.encoder(hidden, backend_mask, padding_bias, cond, adapter_slot, **passed_on)  # (B, T, H)
        pooled = None
        if self.pooler is not None:
            if self.config.pooling == "mean":
                weights = (
                    attention_mask if attention_mask is not None else torch.ones((bsz, seq_len), device=device)
                ).to(hidden.dtype)  # (B, T)
                pooled = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)  # (B, H)
            else:
                pooled = self.pooler(hidden)  # (B, H)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


@dataclass
class CaMtlMultiTaskOutput(ModelOutput):
    """Output of :class:`CaMtlForMultiTask`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, when `labels` are given):
            Mean over the tasks present in the batch of each task's mean loss (cross-entropy for classification,
            MSE for regression), so a task's weight does not depend on how many of its rows the batch holds.
        logits (`torch.FloatTensor` of shape `(batch_size, max_num_labels)`):
            Row ``i`` holds the scores of its own task ``task_ids[i]``: columns ``0 .. num_labels(task) - 1``;
            columns past that hold the dtype's lowest finite value (``torch.finfo(dtype).min``, as transformers'
            masks: finite, and ``softmax`` gives them probability 0, so ``softmax`` and ``argmax`` work on the whole
            row). A regression row's prediction is in column 0.
        task_losses (`torch.FloatTensor` of shape `(num_tasks,)`, *optional*, when `labels` are given):
            Each task's mean loss in this batch; ``nan`` for tasks absent from the batch.
        entropy (`torch.FloatTensor` of shape `(batch_size,)`):
            Normalised prediction entropy of each row in [0, 1] (``H(p) / log K``): the MT-Uncertainty score. For a
            regression row, the binary entropy of its prediction placed in the task's ``label_range``.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): embeddings and every layer's output, (B, T, H) each.
        attentions (`tuple(torch.FloatTensor)`, *optional*): every layer's attention probabilities, (B, nh, T, T)
            each (eager attention; see :class:`CaMtlModel`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    task_losses: torch.FloatTensor | None = None
    entropy: torch.FloatTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class CaMtlForMultiTask(CaMtlPreTrainedModel):
    """CA-MTL encoder with one small head per task (``heads.<task name>``: Linear(hidden, num_labels or 1)).

    ``forward(input_ids, attention_mask, token_type_ids, task_ids, labels=None)`` with ``task_ids`` a LongTensor of
    shape (B,) (a task name or a list of names is accepted too); ``inputs_embeds``, ``output_attentions`` and
    ``output_hidden_states`` as in :class:`CaMtlModel`. ``labels`` (B,) hold class ids for classification
    rows and targets for regression rows (a float tensor may carry both). See :class:`CaMtlMultiTaskOutput`.
    """

    _auto_class = "AutoModelForSequenceClassification"

    def __init__(self, config: CaMtlConfig):
        super().__init__(config)
        self.bert = CaMtlModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {t["name"]: nn.Linear(config.hidden_size, self._num_outputs(t)) for t in config.tasks}
        )
        self._register_task_buffers()
        self.post_init()

    @staticmethod
    def _num_outputs(task: dict) -> int:
        return task_num_outputs(task)

    # ----- per-task lookup tables, gathered by task id -----
    def _task_tables(self) -> dict:
        tasks = self.config.tasks
        sizes = [self._num_outputs(t) for t in tasks]
        width = max(sizes)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        column = torch.tensor([[offsets[i] + min(k, sizes[i] - 1) for k in range(width)] for i in range(len(tasks))])
        valid = torch.tensor([[k < sizes[i] for k in range(width)] for i in range(len(tasks))])
        ranges = torch.tensor([t.get("label_range") or [0.0, 1.0] for t in tasks], dtype=torch.float32)
        return {
            "head_column": column,  # (num_tasks, K) column of the concatenated heads
            "head_valid": valid,  # (num_tasks, K) column belongs to the task
            "num_outputs": torch.tensor(sizes),  # (num_tasks,)
            "is_regression": torch.tensor([t["kind"] == "regression" for t in tasks]),  # (num_tasks,)
            "is_multi_label": torch.tensor([t["kind"] == "multi_label" for t in tasks]),  # (num_tasks,)
            "label_range": ranges,  # (num_tasks, 2)
        }

    def _register_task_buffers(self):
        device = self.bert.camtl_task.embedding.weight.device
        for name, value in self._task_tables().items():
            self.register_buffer(name, value.to(device), persistent=False)

    def _init_task_buffers(self):
        for name, value in self._task_tables().items():
            init.copy_(getattr(self, name), value)

    @can_return_tuple  # return_dict=False (argument or config): a tuple, as transformers' models give
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CaMtlMultiTaskOutput:
        passed_on = _refuse_unused(kwargs)
        reference = input_ids if input_ids is not None else inputs_embeds
        bsz = reference.shape[0] if reference is not None else 0
        task_ids = self._task_ids_tensor(task_ids, bsz, reference.device if reference is not None else None)
        outputs = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            task_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **passed_on,
        )
        pooled = self.dropout(outputs.pooler_output)  # (B, H)
        # every head on every row (tiny matmuls; calling the modules keeps PEFT's wrappers working), then one gather
        all_logits = torch.cat([head(pooled) for head in self.heads.values()], dim=-1)  # (B, sum K_t)
        logits = all_logits.gather(1, self.head_column[task_ids])  # (B, K)
        valid = self.head_valid[task_ids]  # (B, K)
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)  # finite, probability 0 under softmax
        is_regression = self.is_regression[task_ids]  # (B,)
        entropy = self._normalized_entropy(logits, valid, is_regression, task_ids)  # (B,)

        loss = task_losses = None
        if labels is not None:
            loss, task_losses = self._loss(logits, labels, task_ids)
        return CaMtlMultiTaskOutput(
            loss=loss,
            logits=logits,
            task_losses=task_losses,
            entropy=entropy,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _normalized_entropy(self, logits, valid, is_regression, task_ids) -> torch.Tensor:
        """Each row's normalised entropy in [0, 1]: of its softmax over its labels (classification), of its value
        placed in its label range (regression), the mean over its labels of each sigmoid's (multi-label)."""
        logits = logits.float()
        probs = logits.softmax(-1)  # (B, K), 0 on invalid columns
        ent = torch.special.entr(probs).sum(-1) / self.num_outputs[task_ids].clamp(min=2).float().log()  # (B,)
        lo, hi = self.label_range[task_ids].unbind(-1)  # (B,), (B,)
        p = ((logits[:, 0] - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)  # regression value placed in its range
        binary = (torch.special.entr(p) + torch.special.entr(1 - p)) / math.log(2)  # (B,)
        sig = torch.sigmoid(logits)  # (B, K), 0 on invalid columns (their logit is the minimum)
        per_label = (torch.special.entr(sig) + torch.special.entr(1 - sig)) / math.log(2) * valid  # (B, K)
        multi = per_label.sum(-1) / valid.sum(-1).clamp(min=1)  # (B,)
        ent = torch.where(self.is_multi_label[task_ids], multi, ent)
        return torch.where(is_regression, binary, ent).detach()

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Each row's loss (B,), float32, with gradients (`per_example_loss`): what the forward's loss averages per
        task, for callers that weigh rows themselves (camtl's trainer). ``logits`` (B, K) the forward's;
        ``labels`` (B,) or (B, K) as the forward takes them (checked the same way); ``task_ids`` (B,)."""
        labels = labels.to(logits.device)
        is_regression = self.is_regression[task_ids]  # (B,)
        labels, multi_hot = self._split_labels(logits, labels, task_ids, is_regression)  # (B,), (B, K) or None
        is_multi_label = self.is_multi_label[task_ids] if multi_hot is not None else None  # (B,)
        num_outputs = self.num_outputs[task_ids]  # (B,)
        if not torch.compiler.is_compiling() and multi_hot is not None:
            own = self.head_valid[task_ids]  # (B, K)
            bad = is_multi_label[:, None] & own & ((multi_hot < 0) | (multi_hot > 1) | ~torch.isfinite(multi_hot))
            if bad.any():
                row = int(bad.any(-1).nonzero()[0, 0])
                task = self.config.tasks[int(task_ids[row])]
                raise ValueError(
                    f"Labels {multi_hot[row][own[row]].tolist()} at row {row} are invalid for the "
                    f"multi-label task {task['name']!r}: expected one target in [0, 1] (multi-hot) per "
                    f"label {task['labels']}"
                )
        if not torch.compiler.is_compiling():
            is_class = ~is_regression
            if is_multi_label is not None:
                is_class = is_class & ~is_multi_label
            bad = is_class & ((labels != labels.round()) | (labels < 0) | (labels >= num_outputs))
            bad = bad | (is_regression & ~torch.isfinite(labels.float()))
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                task = self.config.tasks[int(task_ids[row])]
                allowed = (
                    f"class ids 0..{len(task['labels']) - 1} ({task['labels']})"
                    if task["kind"] == "classification"
                    else "a finite number"
                )
                raise ValueError(
                    f"Label {labels[row].item()!r} at row {row} is invalid for task "
                    f"{task['name']!r}: expected {allowed}"
                )
        return per_example_loss(logits, labels, is_regression, multi_hot, is_multi_label)  # (B,)

    def _loss(self, logits, labels, task_ids):
        per_example = self.example_losses(logits, labels, task_ids)  # (B,)
        num_tasks = len(self.config.tasks)
        sums = per_example.new_zeros(num_tasks).index_add(0, task_ids, per_example)  # (num_tasks,)
        counts = torch.bincount(task_ids, minlength=num_tasks).to(per_example.dtype)  # (num_tasks,)
        present = counts > 0
        per_task = sums / counts.clamp(min=1)
        loss = (per_task * present).sum() / present.sum().clamp(min=1)
        task_losses = torch.where(present, per_task, torch.full_like(per_task, float("nan"))).detach()
        return loss, task_losses

    def _split_labels(self, logits, labels, task_ids, is_regression):
        """``labels`` (B,) (class ids and regression targets) or (B, K) (per column: a classification row's one-hot, a
        regression row's target in column 0, a multi-label row's multi-hot; columns past a row's labels ignored) as
        ``(targets (B,), multi_hot (B, K) or None)``; ``ValueError`` for any other shape or for multi-label rows given
        (B,) labels."""
        has_multi = bool(self.is_multi_label.any())
        if labels.shape == task_ids.shape:
            if has_multi and not torch.compiler.is_compiling() and bool(self.is_multi_label[task_ids].any()):
                row = int(self.is_multi_label[task_ids].nonzero()[0, 0])
                raise ValueError(
                    f"Row {row} is of the multi-label task "
                    f"{self.config.tasks[int(task_ids[row])]['name']!r}: give labels of shape "
                    f"{tuple(logits.shape)} (a multi-hot row per example; one-hot for classification "
                    f"rows, the target in column 0 for regression rows)"
                )
            return labels, None
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels must have shape {tuple(task_ids.shape)} (one class id or target per example) or "
                f"{tuple(logits.shape)} (per column: one-hot, multi-hot, or the target in column 0), "
                f"got {tuple(labels.shape)}"
            )
        own = self.head_valid[task_ids]  # (B, K)
        class_ids = torch.where(own, labels, torch.full_like(labels, -1.0)).argmax(-1).to(labels.dtype)  # (B,)
        if not torch.compiler.is_compiling():
            is_class = ~is_regression & ~self.is_multi_label[task_ids]
            one_hot = ((labels == 0) | (labels == 1)) & own  # (B, K)
            bad = is_class & ~((one_hot.sum(-1) == own.sum(-1)) & ((labels * own).sum(-1) == 1))
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                task = self.config.tasks[int(task_ids[row])]
                raise ValueError(
                    f"Labels {labels[row][own[row]].tolist()} at row {row} are invalid for task "
                    f"{task['name']!r}: a classification row of (B, K) labels is one-hot over "
                    f"{task['labels']}"
                )
        targets = torch.where(is_regression, labels[:, 0], class_ids)  # (B,)
        return targets, (labels if has_multi else None)

    # ----- continual learning: add, remove, rename tasks -----
    def add_task(self, spec, init_from: str = "mean") -> int:
        """Add a task (a task-embedding row and a head) and return its id. Existing tasks keep their ids and, until
        the model is trained further, their exact outputs; train the new task with ``set_trainable("tasks",
        tasks=[name])`` to keep them bit-identical under any optimizer.

        ``init_from``: ``"mean"`` (mean of the existing task embeddings) or the name of an existing task whose
        embedding (and head, when it has as many outputs) the new task starts from.
        """
        spec = normalize_task_spec(spec, len(self.config.tasks))
        if spec["name"] in self.config.task_names:
            raise ValueError(f"Task {spec['name']!r} already exists. Existing tasks: {self.config.describe_tasks()}")
        if init_from != "mean" and init_from not in self.config.task_names:
            raise ValueError(
                f"init_from must be 'mean' or an existing task ({self.config.describe_tasks()}), got {init_from!r}"
            )
        old = self.get_base_model().camtl_task.embedding.table().detach()  # (num_tasks, C)
        row = old.mean(0, keepdim=True) if init_from == "mean" else old[self.task_id(init_from)][None]  # (1, C)
        self._set_task_embeddings(torch.cat([old, row]))  # (num_tasks + 1, C)
        head = nn.Linear(
            self.config.hidden_size,
            self._num_outputs(spec),
            device=old.device,
            dtype=next(iter(self.heads.values())).weight.dtype,
        )
        with torch.no_grad():
            source = self.heads[init_from] if init_from != "mean" else None
            if source is not None and source.out_features == head.out_features:
                head.load_state_dict(source.state_dict())
            else:
                nn.init.normal_(head.weight, std=self.config.initializer_range)
                nn.init.zeros_(head.bias)
        self.heads[spec["name"]] = head
        self.config.tasks = self.config.tasks + [spec]
        self._register_task_buffers()
        self._refresh_adapter_slots()
        return len(self.config.tasks) - 1

    def add_task_adapters(self, tasks: list, size: int | None = None, layers: list | None = None) -> int:
        """Give each task of ``tasks`` a per-task bottleneck adapter (:class:`CaMtlTaskAdapter`) of bottleneck
        ``size`` in ``layers`` (default every layer), and return the number of new parameters. Its up-projection
        starts at zero: every output is unchanged until it trains (``set_trainable("tasks", tasks=...)`` trains it
        with the task's embedding row and head). Rows of other tasks never read it. The first call fixes ``size``
        and ``layers`` for the model (``config.task_adapter_size``, ``config.task_adapter_layers``)."""
        config = self.config
        names = [config.task_names[self.task_id(t)] for t in tasks]
        again = [n for n in names if n in config.task_adapter_tasks]
        if again or len(set(names)) != len(names):
            raise ValueError(
                f"add_task_adapters: {again or names} already have an adapter or are repeated "
                f"(tasks with adapters: {config.task_adapter_tasks})"
            )
        if config.task_adapter_tasks:
            fixed = {"size": (size, config.task_adapter_size), "layers": (layers, config.task_adapter_layers)}
            for field, (asked, have) in fixed.items():
                if asked is not None and asked != have:
                    raise ValueError(f"add_task_adapters: this model's task adapters have {field}={have}, got {asked}")
        else:
            if size is None:
                raise ValueError("add_task_adapters needs size (the bottleneck size) for the model's first adapters")
            config.task_adapter_size, config.task_adapter_layers = size, layers
        before = sum(p.numel() for p in self.parameters())
        old_slots = len(config.task_adapter_tasks)
        config.task_adapter_tasks = config.task_adapter_tasks + names
        try:
            config.validate_task_adapters()
        except ValueError:
            config.task_adapter_tasks = config.task_adapter_tasks[:old_slots]
            raise
        self._rebuild_task_adapters(list(range(old_slots)))
        return sum(p.numel() for p in self.parameters()) - before

    def _rebuild_task_adapters(self, kept: list) -> None:
        """Build every layer's task adapters for ``config.task_adapter_tasks``; slot ``j`` of the new ones takes
        slot ``kept[j]`` of the old ones; the slots past ``kept`` start as new (down random, up zero)."""
        base = self.get_base_model()
        config, reference = self.config, base.camtl_task.embedding.weight
        for i, layer in enumerate(base.encoder.layer):
            old = layer.camtl_task_adapter
            new = (
                CaMtlTaskAdapter(config).to(device=reference.device, dtype=reference.dtype)
                if i in config.task_adapter_layer_ids
                else None
            )
            if new is not None:
                with torch.no_grad():
                    for name in ("down", "down_bias", "up", "up_bias"):
                        table = getattr(new, name).weight
                        if name == "down":
                            nn.init.normal_(table, std=config.initializer_range)
                        else:
                            nn.init.zeros_(table)
                        if old is not None and kept:
                            table[: len(kept)] = getattr(old, name).table()[kept]
            layer.camtl_task_adapter = new
        self._refresh_adapter_slots()

    def _refresh_adapter_slots(self) -> None:
        base = self.get_base_model()
        base.camtl_adapter_slot = base._adapter_slots().to(base.camtl_task.embedding.weight.device)

    def remove_task(self, name: str) -> None:
        """Remove a task (its embedding row and head). Tasks after it move down by one id."""
        task_id = self.task_id(name)
        if len(self.config.tasks) == 1:
            raise ValueError("Cannot remove the only task of the model")
        old = self.get_base_model().camtl_task.embedding.table().detach()  # (num_tasks, C)
        self._set_task_embeddings(old[[i for i in range(old.shape[0]) if i != task_id]])  # (num_tasks - 1, C)
        name = self.config.task_names[task_id]
        del self.heads[name]
        self.config.tasks = [t for i, t in enumerate(self.config.tasks) if i != task_id]
        self._register_task_buffers()
        adapted = self.config.task_adapter_tasks
        if name in adapted:
            self.config.task_adapter_tasks = [n for n in adapted if n != name]
            self._rebuild_task_adapters([j for j, n in enumerate(adapted) if n != name])
        self._refresh_adapter_slots()

    def _set_task_embeddings(self, rows: torch.Tensor) -> None:
        """Replace the task-embedding table by a new :class:`CaMtlTaskTable` holding ``rows`` (num_tasks, C), on the
        old table's device and dtype; trainable when the old table was ordinary and trainable (rows held apart by
        ``set_trainable("tasks")`` are folded back: call ``set_trainable`` again)."""
        encoder = self.get_base_model().camtl_task
        old = encoder.embedding
        trainable = old.weight.requires_grad and old.own_ids.numel() == 0
        embedding = CaMtlTaskTable(*rows.shape, init_std=old.init_std)
        embedding = embedding.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            embedding.weight.copy_(rows)
        embedding.weight.requires_grad_(trainable)
        encoder.embedding = embedding

    def rename_task(self, old_name: str, new_name: str) -> None:
        """Rename a task; its id, embedding and head are unchanged."""
        task_id = self.task_id(old_name)
        spec = normalize_task_spec(dict(self.config.tasks[task_id], name=new_name), task_id)
        if new_name in self.config.task_names:
            raise ValueError(f"Task {new_name!r} already exists. Existing tasks: {self.config.describe_tasks()}")
        self.heads = nn.ModuleDict({(new_name if key == old_name else key): head for key, head in self.heads.items()})
        self.config.tasks = [spec if i == task_id else t for i, t in enumerate(self.config.tasks)]
        self.config.task_adapter_tasks = [new_name if n == old_name else n for n in self.config.task_adapter_tasks]

    # ----- building from a BERT checkpoint -----
    @classmethod
    def from_bert(cls, name_or_path: str, tasks: list, load_tokenizer: bool = True, **config_overrides):
        """Build a CA-MTL model from any BERT-layout checkpoint (a local folder or a Hub id).

        BERT's parameters load under their own names; only CA-MTL's new parameters (``camtl_*``) and the task heads
        are initialised. They are missing from the checkpoint by design, so transformers' load report (which lists
        them as "newly initialized") is not shown; a warning names any *BERT* parameter the checkpoint lacks.
        ``config_overrides`` set CA-MTL knobs (e.g. ``adapter_size=32``); ``preset="authors"`` starts from the knobs
        of ``CAMTL_PRESETS["authors"]`` (the authors' architecture), which other overrides then change. With
        ``reinit_adapter_layers`` the adapter layers' BERT weights are re-initialised.
        Pass ``output_loading_info=True`` to get ``(model, loading_info)``. The checkpoint's tokenizer, when it
        has one, is attached as ``model.tokenizer`` and saved by ``save_pretrained``.
        """
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging

        preset = config_overrides.pop("preset", "ours")
        if preset not in CAMTL_PRESETS:
            raise ValueError(f"Unknown CA-MTL preset {preset!r}; valid presets: {list(CAMTL_PRESETS)}")
        config_overrides = {**CAMTL_PRESETS[preset], **config_overrides}
        load_kwargs = {
            k: config_overrides.pop(k)
            for k in (
                "output_loading_info",
                "dtype",
                "revision",
                "token",
                "cache_dir",
                "local_files_only",
                "attn_implementation",
            )
            if k in config_overrides
        }
        base = AutoConfig.from_pretrained(
            name_or_path,
            **{k: v for k, v in load_kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")},
        )
        missing = [f for f in BERT_FIELDS if getattr(base, f, None) is None and f != "pad_token_id"]
        if missing or getattr(base, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{name_or_path} is not a BERT-layout checkpoint (model_type={base.model_type!r}, "
                f"missing fields {missing}): CA-MTL needs BERT's encoder with absolute positions"
            )
        fields = {f: getattr(base, f) for f in BERT_FIELDS}
        config = CaMtlConfig(**{**fields, "tasks": tasks, **config_overrides})
        want_info = load_kwargs.pop("output_loading_info", False)
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the load report: every new CA-MTL parameter "newly initialized", as expected
        try:
            model, info = cls.from_pretrained(name_or_path, config=config, output_loading_info=True, **load_kwargs)
        finally:
            logging.set_verbosity(verbosity)
        not_new = sorted(k for k in info.get("missing_keys", []) if not is_camtl_parameter(k))
        if not_new:
            logging.get_logger(__name__).warning(
                f"{name_or_path} lacks BERT parameters {not_new}: they are initialised at random"
            )
        if config.reinit_adapter_layers and config.conditional_adapter:
            model._reinit_adapter_layers()
        if load_tokenizer:
            try:
                model.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            except (OSError, ValueError):
                model.tokenizer = None
        return (model, info) if want_info else model


__all__ = ["CaMtlPreTrainedModel", "CaMtlModel", "CaMtlForMultiTask", "CaMtlMultiTaskOutput", "is_camtl_parameter"]
