"""camtl: the training side of CA-MTL (the model itself is ``modeling_camtl``, which travels with checkpoints).

Submodules, imported explicitly (``from camtl.tasks import load_split``) so that ``import camtl`` stays cheap:

- ``config``: the run's settings (``train.py``'s options), parsed and validated;
- ``tasks``: what each task is (``TaskDef``), the built-in GLUE and auxiliary tasks and where their data comes from;
- ``readers``: reading task files into checked examples, tokenising them, the multi-task collator (``data``
  re-exports ``tasks`` and ``readers`` for older imports);
- ``sampling``: which task and rows each batch holds (proportional, temperature, MT-Uncertainty, ...);
- ``trainer``: the Accelerate training loop, evaluation and prediction;
- ``metrics``: the GLUE metrics (scikit-learn and scipy);
- ``build``, ``weights``, ``adapters``: building a model from a base checkpoint, loading weights, adapter files;
- ``checkpointing``, ``interrupt``: atomic resumable checkpoints, stopping cleanly on a signal;
- ``serving``: CPU serving (ONNX export, int8 quantisation, ONNX Runtime) and the choice of backend;
- ``monitoring``: watching a served model (per-task drift, out-of-distribution alarms, label-free accuracy);
- ``default_model``, ``model_card``, ``hub``: the shipped default model, its card, Hub and Space upload;
- ``paths``: where the files beside the package (sample data, configs, default model) are found.
"""
