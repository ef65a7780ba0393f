"""camtl: the training side of CA-MTL (the model itself is ``modeling_camtl``, which travels with checkpoints).

Submodules, imported explicitly (``from camtl.tasks import load_split``) so that ``import camtl`` stays cheap:

- ``config``: the run's settings (``train.py``'s options), parsed and validated;
- ``data``: task definitions, reading and tokenising task files, the multi-task collator;
- ``sampling``: which task and rows each batch holds (proportional, temperature, MT-Uncertainty, ...);
- ``trainer``: the Accelerate training loop, evaluation and prediction;
- ``metrics``: the GLUE metrics (scikit-learn and scipy);
- ``build``, ``weights``, ``adapters``: building a model from a base checkpoint, loading weights, adapter files;
- ``checkpointing``, ``interrupt``: atomic resumable checkpoints, stopping cleanly on a signal;
- ``default_model``, ``model_card``, ``hub``: the shipped default model, its card, Hub and Space upload;
- ``paths``: where the files beside the package (sample data, configs, default model) are found.
"""
