"""The vendored mixins are imported by tests/test_transformers_common.py, never collected on their own."""

collect_ignore_glob = ["*.py", "*/*.py"]
