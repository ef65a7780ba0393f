"""Shared test setup: offline Hugging Face libraries and the paths of the real data."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"  # full GLUE files (outside the repo)
SAMPLE_DIR = REPO_ROOT / "data" / "sample" / "glue"  # the small sample inside the repo


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The full GLUE data (../shared/data/glue beside the project); its absence is an error, not a skip."""
    if not GLUE_DIR.is_dir():
        raise FileNotFoundError(f"full GLUE data not found at {GLUE_DIR}: the tests read real rows from it")
    return GLUE_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The GLUE sample shipped in data/sample/glue."""
    return SAMPLE_DIR


def pytest_configure(config):
    """The markers of transformers' vendored common tests (tests/transformers_common)."""
    for marker in (
        "slow",
        "accelerate_tests",
        "flash_attn_test",
        "flash_attn_3_test",
        "flash_attn_4_test",
        "torch_compile_test",
    ):
        config.addinivalue_line("markers", f"{marker}: transformers' common-test marker")
