"""Stand-in (ours, not transformers') for ``tests/generation/test_utils.py``, which the 5.23.0 sdist does not carry.

``ModelTesterMixin`` only checks ``issubclass(tester, GenerationTesterMixin)`` against whether the model can
generate; CA-MTL cannot, and its tester does not inherit this marker.
"""


class GenerationTesterMixin:
    """Marker: testers of generating models inherit transformers' real mixin (not vendored here)."""
