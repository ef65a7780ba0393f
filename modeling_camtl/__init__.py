"""CA-MTL as a Hugging Face model. This ``__init__`` only imports and registers; it never travels with checkpoints
(the config and modeling files do, and load with ``trust_remote_code=True``)."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_camtl import (
    BERT_FIELDS,
    CAMTL_KNOBS,
    CAMTL_PRESETS,
    METRICS_FOR_KIND,
    TASK_KINDS,
    CaMtlConfig,
    check_task_fields,
    normalize_task_spec,
)
from .modeling_camtl import (
    CaMtlForMultiTask,
    CaMtlModel,
    CaMtlMultiTaskOutput,
    CaMtlPreTrainedModel,
    is_camtl_parameter,
    per_example_loss,
)

AutoConfig.register("camtl", CaMtlConfig, exist_ok=True)
AutoModel.register(CaMtlConfig, CaMtlModel, exist_ok=True)
AutoModelForSequenceClassification.register(CaMtlConfig, CaMtlForMultiTask, exist_ok=True)

__all__ = [
    "BERT_FIELDS",
    "CAMTL_KNOBS",
    "CAMTL_PRESETS",
    "CaMtlConfig",
    "CaMtlForMultiTask",
    "CaMtlModel",
    "CaMtlMultiTaskOutput",
    "CaMtlPreTrainedModel",
    "METRICS_FOR_KIND",
    "TASK_KINDS",
    "check_task_fields",
    "is_camtl_parameter",
    "normalize_task_spec",
    "per_example_loss",
]
