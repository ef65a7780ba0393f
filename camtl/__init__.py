"""CA-MTL training-side utilities: task definitions and data (`camtl.data`), GLUE metrics (`camtl.metrics`).

Submodules are imported explicitly (``from camtl.data import load_split``) so that ``import camtl``
stays cheap and pulls in neither `datasets` nor `torch`.
"""
