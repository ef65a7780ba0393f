"""CA-MTL model configuration.

This file travels with every checkpoint (``trust_remote_code``): it may import only the standard library,
torch and transformers, and other files of this folder only as ``from .x import y``.
"""

import math
import re

from transformers import PreTrainedConfig

#: ``multi_label``: several labels per text (topics, emotions, toxicity): a sigmoid per label, binary cross-entropy.
TASK_KINDS = ("classification", "regression", "multi_label")
#: transformers' ``problem_type`` of each task kind (a config's ``problem_type`` is derived from its tasks).
PROBLEM_TYPE_OF_KIND = {
    "classification": "single_label_classification",
    "regression": "regression",
    "multi_label": "multi_label_classification",
}
#: Fields whose value must be one of a few words: ours (the default) first, the authors' design second.
CHOICE_FIELDS = {
    "conditional_attention_film": ("per_block", "shared"),
    "task_transform": ("residual_mlp", "linear"),
    "alignment_input": ("transformed", "raw"),
    "conditional_layer_norm_gain": ("scale", "film"),
    "adapter_style": ("residual", "replace"),
    "pooling": ("pooler", "mean"),
}
#: BERT's architecture fields: `CaMtlForMultiTask.from_bert` copies them from the BERT checkpoint.
BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)
#: Named sets of knob values. ``authors``: the architecture of the authors' code (CAMTL/CA-MTL on GitHub,
#: ``src/model/encoders/ca_mtl_base.py`` and ``conditional_modules.py``), every departure of ours switched to theirs;
#: the initialisation stays ours (zero generators: identity at init wherever their design allows it).
CAMTL_PRESETS = {
    "ours": {},
    "authors": {
        "conditional_attention_layers": "all",  # block-diagonal attention in every layer, the frozen ones too
        "frozen_attention_generators": True,  # ... where only its block matrices train
        "conditional_attention_blocks": None,  # hidden_size // span blocks
        "conditional_attention_film": "shared",  # one gamma/beta for all blocks
        "task_embedding_dim": None,  # hidden_size
        "task_transform": "linear",  # one Linear feeds attention, layer norms and adapter
        "alignment_input": "raw",  # the alignment FiLM reads the raw task embedding
        "conditional_layer_norm_gain": "film",  # gain w * (1 + gamma) + beta
        "adapter_style": "replace",  # FiLM, linear bottleneck to hidden/3, new conditional LN with the attention output
        "adapter_size": None,  # hidden_size // 3
        "reinit_adapter_layers": True,  # the adapter (top) layer is trained from scratch
    },
}
#: The one home of the task-spec rules (`check_task_fields`): a task's name, its kind and, for a data task, its metric.
TASK_NAME_RULE = "letters, digits, '_' or '-', starting with a letter or a digit (e.g. 'sst2', 'sick_e')"
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
#: The metrics that fit each task kind.
METRICS_FOR_KIND = {
    "classification": ("mcc", "accuracy", "f1"),
    "regression": ("pearson_spearman",),
    "multi_label": ("f1_micro", "f1_macro"),
}
TASK_SPEC_FIELDS = ("name", "kind", "labels", "text_fields", "label_range")


def check_task_fields(name, kind, labels, text_fields, label_range=None, metric=None, where=None) -> dict:
    """The one check of a task's fields, shared by the model config (`normalize_task_spec`) and the data side
    (``camtl.tasks.TaskDef``): returns them normalised, or raises ``ValueError`` naming the bad field and the valid
    choices.

    - ``name``: `TASK_NAME_RULE` (it names the task's head module and its config entry);
    - ``kind``: one of `TASK_KINDS`;
    - ``labels``: at least two distinct names for classification and multi_label (``None``: not known yet, a data
      file will tell); none for regression;
    - ``text_fields``: one or two names of input texts;
    - ``label_range``: ``[lo, hi]`` with ``lo < hi``, regression only (``None`` stays ``None``);
    - ``metric`` (data tasks only, ``None``: not checked): one of ``METRICS_FOR_KIND[kind]``.

    ``where`` prefixes the messages (``"tasks[3]"``); default ``"Task <name>"``.
    """
    if not isinstance(name, str) or not _TASK_NAME.match(name):
        raise ValueError(f"{where or 'Task'}: invalid task name {name!r}: use {TASK_NAME_RULE}")
    where = f"{where} ({name})" if where else f"Task {name!r}"
    if kind not in TASK_KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; valid kinds: {list(TASK_KINDS)}")
    if labels is not None:
        labels = [str(label) for label in ([labels] if isinstance(labels, str) else labels)]
    if kind in ("classification", "multi_label") and labels is not None:
        if len(labels) < 2:
            raise ValueError(f"{where}: labels: a {kind} task needs at least 2 label names, got {labels}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}: labels: duplicate label names in {labels}")
    if kind == "regression" and labels:
        raise ValueError(f"{where}: labels: a regression task has no labels, got {labels}")
    text_fields = [str(f) for f in ([text_fields] if isinstance(text_fields, str) else text_fields)]
    if len(text_fields) not in (1, 2):
        raise ValueError(f"{where}: text_fields must name one text or a pair, got {text_fields}")
    if label_range is not None:
        if kind != "regression":
            raise ValueError(f"{where}: label_range is for regression tasks only")
        label_range = [float(v) for v in label_range]
        if len(label_range) != 2 or not label_range[0] < label_range[1]:
            raise ValueError(f"{where}: label_range must be [lo, hi] with lo < hi, got {label_range}")
    if metric is not None and metric not in METRICS_FOR_KIND[kind]:
        raise ValueError(
            f"{where}: metric {metric!r} does not fit a {kind} task; valid: {list(METRICS_FOR_KIND[kind])}"
        )
    return {"name": name, "kind": kind, "labels": labels, "text_fields": text_fields, "label_range": label_range}


def normalize_task_spec(spec, index: int = 0) -> dict:
    """Return one task spec as a plain, JSON-safe dict, or raise ``ValueError`` naming the bad field.

    A spec is a dict (or an object with ``to_spec()``) with ``name``, ``kind`` (default classification), ``labels``,
    ``text_fields`` (default ``["text"]``) and, for regression, ``label_range`` (used to score its uncertainty, default
    ``[0, 1]``); the rules are `check_task_fields`'.
    """
    if hasattr(spec, "to_spec"):
        spec = spec.to_spec()
    if not isinstance(spec, dict):
        raise ValueError(f"tasks[{index}] must be a dict with name/kind/labels/text_fields, got {type(spec).__name__}")
    unknown = set(spec) - set(TASK_SPEC_FIELDS)
    if unknown:
        raise ValueError(
            f"tasks[{index}] has unknown field(s) {sorted(unknown)}; valid fields: " + ", ".join(TASK_SPEC_FIELDS)
        )
    kind = spec.get("kind", "classification")
    out = check_task_fields(
        spec.get("name"),
        kind,
        spec.get("labels") or [],
        spec.get("text_fields") or ["text"],
        spec.get("label_range"),
        where=f"tasks[{index}]",
    )
    if kind != "regression":
        del out["label_range"]
    elif out["label_range"] is None:
        out["label_range"] = [0.0, 1.0]
    return out


def task_num_outputs(spec: dict) -> int:
    """Number of logit columns of a (normalised) task: its label count, or 1 for a regression score."""
    return len(spec["labels"]) if spec["kind"] != "regression" else 1


class CaMtlConfig(PreTrainedConfig):
    r"""Configuration of a CA-MTL model (Pilault, El hattami and Pal, ICLR 2021): BERT's hyper-parameters, the tasks,
    and the knobs of the task-conditioned modules.

    BERT fields (``vocab_size`` ... ``pad_token_id``) mean what they mean in ``BertConfig``.

    Args:
        tasks (`list[dict]`):
            Ordered task specs (see :func:`normalize_task_spec`). The position in this list is the task id. A list,
            never a dict keyed by name: ``config.json`` is written with sorted keys and would silently remap task ids.
        task_embedding_dim (`int`, *optional*, defaults to 64):
            Size of the learned task embedding ``z_i`` and of its transformation that drives every generator.
            ``None``: ``hidden_size`` (the authors'); the saved config holds the number.
        task_transform (`str`, defaults to "residual_mlp"):
            The transformation ``c`` of the task embedding ``z``: ``"residual_mlp"`` (ours, ``c = z + MLP(z)``) or
            ``"linear"`` (the authors', ``c = W z + b``).
        alignment_input (`str`, defaults to "transformed"):
            What conditions the alignment FiLM: ``"transformed"`` (ours, ``c`` like every other generator) or ``"raw"``
            (the authors', the embedding ``z`` itself).
        task_embedding_init_std (`float`, *optional*):
            Standard deviation of the task embeddings at initialisation; ``None`` (the default): ``initializer_range``,
            what every shipped model was trained with. (Configs saved before this setting took effect hold 1.0, which
            was then ignored; it matters only for a model built fresh from such a config, not for a loaded one.)
        generator_init_std (`float`, defaults to 0.0):
            Standard deviation of the conditioning generators (FiLM, layer-norm gain, block bias) at initialisation.
            0 makes a freshly built CA-MTL model compute exactly what its BERT checkpoint computes.
        conditional_layers (`list[int]`, *optional*):
            Layers with conditional layer norm (and conditional attention, unless ``conditional_attention_layers``
            says otherwise). Default: the upper half, as in the paper.
        conditional_attention_layers (`list[int]` or `"all"`, *optional*):
            Layers with conditional attention. Default: ``conditional_layers`` (ours); ``"all"``: every layer, the
            frozen ones included (the authors').
        adapter_layers (`list[int]`, *optional*):
            Layers with a conditional bottleneck adapter. Default: the top layer.
        adapter_size (`int`, *optional*, defaults to 64):
            Bottleneck size of the conditional adapter. ``None``: ``hidden_size // 3`` (the authors').
        adapter_style (`str`, defaults to "residual"):
            ``"residual"`` (ours): ``LN(h + F + up(act(FiLM(down(F)))))`` with ``F = FFN(h)`` and ``up`` starting at
            zero, so the layer starts as BERT's. ``"replace"`` (the authors'): the layer's output ``y = LN(h + F)`` goes
            through ``up(down(FiLM(y)))`` (no activation), whose sum with the attention output ``h`` goes through a new
            (conditional) layer norm; it replaces the FFN residual and is *not* the identity at initialisation.
        reinit_adapter_layers (`bool`, defaults to False):
            ``from_bert`` re-initialises BERT's parameters of the adapter layers, which then train from scratch (the
            authors' top layer is new). Checkpoints load their trained weights either way.
        conditional_attention_blocks (`int`, *optional*, defaults to 4):
            Number ``N`` of diagonal blocks of the conditional attention bias over ``conditional_attention_span``
            positions (block size ``ceil(span / N)``). ``None``: ``max(1, hidden_size // span)`` (the authors':
            hidden size over the maximum input length).
        conditional_attention_span (`int`, defaults to 128):
            Positions covered by the ``N`` blocks. Longer inputs reuse the blocks cyclically, so any length up to
            ``max_position_embeddings`` works with dynamic padding.
        conditional_attention_film (`str`, defaults to "per_block"):
            The task FiLM of the blocks: ``"per_block"`` (ours, a gamma and beta per position of the span) or
            ``"shared"`` (the authors', one gamma and beta per offset inside a block, shared by all blocks).
        conditional_layer_norm_gain (`str`, defaults to "scale"):
            The task modulation of a conditional layer norm's gain ``w``: ``"scale"`` (ours, ``w * (1 + gamma(c))``)
            or ``"film"`` (the authors', ``w * (1 + gamma(c)) + beta(c)``); the bias is BERT's in both.
        conditional_alignment, conditional_attention, conditional_layer_norm, conditional_adapter (`bool`):
            Switch each conditional module on or off (all off gives plain multi-task learning with a shared encoder).
        num_frozen_layers (`int`, *optional*):
            Lower layers kept frozen in training. Default: the lower half, as in the paper.
        freeze_embeddings (`bool`, defaults to True):
            Keep the embeddings frozen in training.
        frozen_attention_generators (`bool`, defaults to False):
            In the frozen layers (``set_trainable("paper")``), freeze the conditional attention's FiLM generator too, so
            only its block matrices train there (the authors' freezing rule). False: every CA-MTL module trains.
        pooling (`str`, defaults to "pooler"):
            Sentence representation fed to the heads: ``"pooler"`` (BERT's pooler on the first token) or ``"mean"``.
        classifier_dropout (`float`, *optional*):
            Dropout before the task heads. Default: ``hidden_dropout_prob``.
        task_adapter_size (`int`, *optional*):
            Bottleneck size of the per-task adapters (``CaMtlTaskAdapter``) of the tasks in ``task_adapter_tasks``:
            ``y = h + up_t(act(down_t(h)))`` on each listed layer's output, for the rows of task ``t`` only; every
            other row gets exactly ``h``. Set by ``CaMtlForMultiTask.add_task_adapters``.
        task_adapter_layers (`list[int]`, *optional*):
            Layers whose output the task adapters modulate. Default: every layer.
        task_adapter_tasks (`list[str]`, defaults to `[]`):
            The tasks that have a task adapter, in slot order.

    transformers' sequence-classifier fields are derived from ``tasks``, never free: ``num_labels`` (the width of
    ``logits``: the largest number of outputs over the tasks), ``id2label`` / ``label2id`` (the one task's labels for
    a single-task model, else ``LABEL_i`` per column: each task's label names live in ``tasks``) and
    ``problem_type`` (the tasks' common kind, ``None`` when they mix kinds). A value that contradicts the tasks,
    given at construction, to ``from_pretrained`` or set later, raises ``ValueError``; setting ``tasks`` re-derives
    them. (A saved config's generic ``LABEL_i`` map of another size, written before they were derived, is replaced.)
    """

    model_type = "camtl"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | None = None

    tasks: list | None = None
    task_embedding_dim: int | None = 64
    task_embedding_init_std: float | None = None
    generator_init_std: float = 0.0
    task_transform: str = "residual_mlp"
    alignment_input: str = "transformed"
    conditional_layers: list | None = None
    conditional_attention_layers: list | str | None = None
    adapter_layers: list | None = None
    adapter_size: int | None = 64
    adapter_style: str = "residual"
    reinit_adapter_layers: bool = False
    conditional_attention_blocks: int | None = 4
    conditional_attention_span: int = 128
    conditional_attention_film: str = "per_block"
    conditional_layer_norm_gain: str = "scale"
    conditional_alignment: bool = True
    conditional_attention: bool = True
    conditional_layer_norm: bool = True
    conditional_adapter: bool = True
    num_frozen_layers: int | None = None
    freeze_embeddings: bool = True
    frozen_attention_generators: bool = False
    pooling: str = "pooler"
    task_adapter_size: int | None = None
    task_adapter_layers: list | None = None
    task_adapter_tasks: list | None = None

    def __post_init__(self, **kwargs):
        self.tasks = [normalize_task_spec(spec, i) for i, spec in enumerate(self.tasks or [])]
        self._init_label_fields(kwargs.get("num_labels"))
        if self.conditional_layers is not None:
            self.conditional_layers = [int(i) for i in self.conditional_layers]
        if self.adapter_layers is not None:
            self.adapter_layers = [int(i) for i in self.adapter_layers]
        self.task_adapter_tasks = [str(name) for name in (self.task_adapter_tasks or [])]
        if self.task_adapter_layers is not None:
            self.task_adapter_layers = [int(i) for i in self.task_adapter_layers]
        if isinstance(self.conditional_attention_layers, (list, tuple)):
            self.conditional_attention_layers = [int(i) for i in self.conditional_attention_layers]
        # the authors' sizes (None) resolve to numbers, so the saved config says what was built
        if self.task_embedding_dim is None:
            self.task_embedding_dim = self.hidden_size
        if self.adapter_size is None:
            self.adapter_size = max(1, self.hidden_size // 3)
        if self.conditional_attention_blocks is None:
            self.conditional_attention_blocks = max(1, self.hidden_size // self.conditional_attention_span)
        super().__post_init__(**kwargs)
        self.validate_camtl()

    def validate_camtl(self):
        """Raise ``ValueError`` naming the first invalid CA-MTL field."""
        names = [t["name"] for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tasks: duplicate task name(s) {duplicates}")
        for field in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "task_embedding_dim",
            "adapter_size",
            "conditional_attention_blocks",
            "conditional_attention_span",
            "max_position_embeddings",
            "vocab_size",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for field, choices in CHOICE_FIELDS.items():
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {list(choices)}, got {getattr(self, field)!r}")
        n = self.num_hidden_layers
        attention_layers = self.conditional_attention_layers
        if not (attention_layers is None or attention_layers == "all" or isinstance(attention_layers, list)):
            raise ValueError(
                f"conditional_attention_layers must be a list of layer indices, 'all' or null, "
                f"got {self.conditional_attention_layers!r}"
            )
        for field in ("conditional_layers", "adapter_layers", "conditional_attention_layers"):
            layers = getattr(self, field)
            if isinstance(layers, list) and (any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers)):
                raise ValueError(f"{field} must be distinct layer indices in [0, {n - 1}], got {layers}")
        self.validate_task_adapters()
        if self.num_frozen_layers is not None and not 0 <= self.num_frozen_layers <= n:
            raise ValueError(f"num_frozen_layers must be in [0, {n}], got {self.num_frozen_layers}")
        for field in ("task_embedding_init_std", "generator_init_std"):
            if getattr(self, field) is not None and getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)}")

    # ----- transformers' classifier fields, derived from the tasks -----
    def derived_label_fields(self) -> dict:
        """``id2label``, ``label2id`` and ``problem_type`` as the tasks define them (empty without tasks)."""
        if not self.tasks:
            return {}
        if len(self.tasks) == 1 and self.tasks[0]["kind"] != "regression":
            names = list(self.tasks[0]["labels"])
        else:
            names = [f"LABEL_{i}" for i in range(max(task_num_outputs(t) for t in self.tasks))]
        kinds = {t["kind"] for t in self.tasks}
        return {
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
            "problem_type": PROBLEM_TYPE_OF_KIND[kinds.pop()] if len(kinds) == 1 else None,
        }

    def _init_label_fields(self, num_labels) -> None:
        """At construction: refuse given fields that contradict the tasks, then store the derived ones."""
        derived = self.derived_label_fields()
        if not derived:
            return
        if num_labels is not None and num_labels != len(derived["id2label"]):
            self._refuse_label_field("num_labels", num_labels, len(derived["id2label"]))
        for key in ("id2label", "label2id"):
            given = getattr(self, key)
            if given is None:
                continue
            given = (
                {int(k): v for k, v in given.items()} if key == "id2label" else {k: int(v) for k, v in given.items()}
            )
            stale = all(
                re.fullmatch(r"LABEL_\d+", str(name))
                for name in (given.values() if key == "id2label" else given.keys())
            )
            if given != derived[key] and not stale:  # a generic map of another size: an older save, re-derived
                self._refuse_label_field(key, given, derived[key])
        if self.problem_type is not None and self.problem_type != derived["problem_type"]:
            self._refuse_label_field("problem_type", self.problem_type, derived["problem_type"])
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    def _refuse_label_field(self, key, value, derived):
        kinds = ", ".join(f"{t['name']}: {t['kind']} ({task_num_outputs(t)} outputs)" for t in self.tasks)
        raise ValueError(
            f"{key}={value!r} contradicts the tasks ({kinds}), which give {key}={derived!r}. CA-MTL "
            f"derives num_labels, id2label, label2id and problem_type from config.tasks: change the tasks "
            f"(their labels and kind) instead"
        )

    def __setattr__(self, key, value):
        if getattr(self, "_post_init_done", False) and self.tasks:
            if key == "tasks":
                super().__setattr__(key, value)
                for field, derived in self.derived_label_fields().items():
                    object.__setattr__(self, field, derived)
                return
            if key in ("id2label", "label2id", "problem_type"):
                derived = self.derived_label_fields()[key]
                normalised = value
                if key == "id2label" and isinstance(value, dict):
                    normalised = {int(k): v for k, v in value.items()}
                if normalised != derived:
                    self._refuse_label_field(key, value, derived)
                value = derived
        super().__setattr__(key, value)

    @property
    def num_labels(self) -> int | None:
        """The width of ``logits`` (derived from the tasks; see the class docstring)."""
        return len(self.id2label) if self.id2label is not None else None

    @num_labels.setter
    def num_labels(self, num_labels: int):
        if getattr(self, "_post_init_done", False) and self.tasks:
            if num_labels != self.num_labels:
                self._refuse_label_field("num_labels", num_labels, self.num_labels)
            return
        if self.id2label is None or self.num_labels != num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            self.label2id = dict(zip(self.id2label.values(), self.id2label.keys()))

    def validate_task_adapters(self):
        """Raise ``ValueError`` naming the first invalid per-task adapter field."""
        adapted = self.task_adapter_tasks
        unknown = [name for name in adapted if name not in self.task_names]
        if unknown or len(set(adapted)) != len(adapted):
            raise ValueError(f"task_adapter_tasks must be distinct task names ({self.describe_tasks()}), got {adapted}")
        size = self.task_adapter_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"task_adapter_size must be a positive integer or null, got {size!r}")
        if adapted and size is None:
            raise ValueError(f"task_adapter_tasks {adapted} need task_adapter_size (the adapters' bottleneck size)")
        layers, n = self.task_adapter_layers, self.num_hidden_layers
        if layers is not None and (
            not layers or any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers)
        ):
            raise ValueError(f"task_adapter_layers must be distinct layer indices in [0, {n - 1}], got {layers}")

    # ----- resolved views of the knobs (None means "as in the paper") -----
    @property
    def conditional_layer_ids(self) -> list:
        if self.conditional_layers is not None:
            return list(self.conditional_layers)
        return list(range(self.num_hidden_layers // 2, self.num_hidden_layers))

    @property
    def conditional_attention_layer_ids(self) -> list:
        if self.conditional_attention_layers == "all":
            return list(range(self.num_hidden_layers))
        if self.conditional_attention_layers is not None:
            return list(self.conditional_attention_layers)
        return self.conditional_layer_ids

    @property
    def adapter_layer_ids(self) -> list:
        return list(self.adapter_layers) if self.adapter_layers is not None else [self.num_hidden_layers - 1]

    @property
    def task_adapter_layer_ids(self) -> list:
        """Layers with per-task adapters: none without adapted tasks, else ``task_adapter_layers`` (default all)."""
        if not self.task_adapter_tasks:
            return []
        if self.task_adapter_layers is not None:
            return list(self.task_adapter_layers)
        return list(range(self.num_hidden_layers))

    @property
    def frozen_layer_count(self) -> int:
        return self.num_frozen_layers if self.num_frozen_layers is not None else self.num_hidden_layers // 2

    @property
    def attention_block_size(self) -> int:
        return math.ceil(self.conditional_attention_span / self.conditional_attention_blocks)

    @property
    def task_names(self) -> list:
        return [t["name"] for t in self.tasks]

    def task_id(self, task) -> int:
        """Task id of a name or an id, or ``ValueError`` naming the valid tasks."""
        names = self.task_names
        if isinstance(task, str):
            if task in names:
                return names.index(task)
        elif isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(names):
            return task
        raise ValueError(f"Unknown task {task!r}. Valid tasks: {self.describe_tasks()}")

    def describe_tasks(self) -> str:
        return ", ".join(f"{i}={name}" for i, name in enumerate(self.task_names)) or "(none: config.tasks is empty)"


#: The CA-MTL knobs: every field the class declares beyond BERT's architecture (`BERT_FIELDS`) and ``tasks``, so a knob
#: added to the class is in every list of knobs (``from_bert``'s overrides, a run's ``model.camtl``, the adapter
#: files' config) without another edit.
CAMTL_KNOBS = tuple(name for name in CaMtlConfig.__annotations__ if name not in BERT_FIELDS and name != "tasks")


__all__ = [
    "BERT_FIELDS",
    "CAMTL_KNOBS",
    "CAMTL_PRESETS",
    "METRICS_FOR_KIND",
    "TASK_KINDS",
    "CaMtlConfig",
    "check_task_fields",
    "normalize_task_spec",
    "task_num_outputs",
]
