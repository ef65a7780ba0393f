"""Where camtl finds the files that live beside the package in a source checkout, in one place.

``pip install -e .`` (or running from the checkout) keeps them where they are: the bundled GLUE sample
(``data/sample``), the default model's shipped difference (``default_model/``), the recipes (``configs/``), the card
template (``model_card.md``), the app and its examples (``app.py``, ``app_examples.json``) and the Space template
(``space/``). A non-editable install of the wheel carries only the two packages; then :func:`repository_file` says
which file is missing and how to get it, instead of failing later on a path that does not exist.
"""

from __future__ import annotations

from pathlib import Path

#: The source checkout the package was imported from (the folder holding ``camtl/`` and ``modeling_camtl/``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def repository_file(relative: str, what: str) -> Path:
    """``PROJECT_ROOT / relative``, or ``FileNotFoundError`` naming ``what`` is missing and where it was looked for."""
    path = PROJECT_ROOT / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{what} ({relative}) is not at {path}: it ships with the camtl source checkout, not with the wheel. "
            "Clone the repository and install it with `pip install -e .` (or run from the checkout)."
        )
    return path
