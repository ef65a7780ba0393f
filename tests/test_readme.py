"""Every shell command in README.md's code blocks works as written, read from README.md at test time.

Each command runs in README order in a scratch copy of the project layout (``<tmp>/camtl`` with ``configs`` and
``data`` linked, ``<tmp>/shared`` linked to ``../shared``), so its relative paths mean what they mean in a clone and
its outputs land in ``<tmp>/camtl/outputs`` (the quick start's model serves the app and Hub commands after it).
Training commands run shortened by extra flags only (`SHORTER`: fewer steps and rows, no TensorBoard). Commands that
cannot run here are still checked for real, each as `check_command` says:

* ``pip install -r requirements.txt``: needs a package index; checked against the installed versions instead.
* ``python -m pytest ...``: this very suite; checked to be the README's ``# test`` line, which ``.ci/run`` runs.
* ``python train.py ...`` reading a Hub model id or ``--data.data_dir null``: needs the network; parsed with
  train.py's parser, resolved and validated, its tasks built (`network_reason` says why).
* ``python train.py ...`` identical once shortened to a command already run: parsed and validated only.
* ``python -m camtl.hub ...``: pushes to the Hub; run with ``--dry-run`` (the folder staged and checked, the upload
  listed, no request).
* ``python -m camtl.monitoring ...``: run with 16 rows a task, written into ``outputs/`` (``build-default`` would
  rewrite the repository's ``default_model/``).
* ``python -m camtl.serving ...``: run as written (an export, a prediction).
* ``python app.py ...``: starts a server that runs until stopped; run with ``launch`` replaced (the model loaded, the
  page built, the launch arguments checked).

A command that none of these rules covers fails the test: add a rule.
"""

from __future__ import annotations

import os
import re
import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import train
from camtl import trainer
from camtl.config import config_to_dict, resolve_config, validate_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHORTER = [
    "--train.max_steps",
    "2",
    "--train.eval_every",
    "0",
    "--train.save_every",
    "2",
    "--train.batch_size",
    "8",
    "--train.eval_batch_size",
    "32",
    "--data.max_train_rows",
    "64",
    "--data.max_eval_rows",
    "16",
    "--train.report_to",
    "none",
    "--overwrite_output_dir",
    "true",
]


def readme_commands() -> list[str]:
    """The shell commands of README.md's bash code blocks, one per command (continued lines joined, comments
    dropped), in README order."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", "").splitlines():  # a backslash-newline continues the line, as in bash
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def network_reason(cfg) -> str | None:
    """Why a parsed train.py configuration needs the network, or None."""
    for field, value in (("model.base_model", cfg.model.base_model), ("model.init_from", cfg.model.init_from)):
        if value is not None and not os.path.exists(value):
            return f"--{field} {value} is a Hub model id: downloading it needs the network"
    if cfg.data.data_dir is None:
        return "--data.data_dir null reads GLUE from the Hub: needs the network"
    return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch project root laid out like a clone beside ../shared; the tests run in it."""
    root = tmp_path_factory.mktemp("readme")
    (root / "camtl").mkdir()
    for name in ("configs", "data"):
        (root / "camtl" / name).symlink_to(REPO / name)
    (root / "shared").symlink_to(REPO.parent / "shared")
    return root / "camtl"


def run_train(args: list[str]) -> dict:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)  # one mixed-precision setting per process otherwise
    return train.main(args)


def check_train(args: list[str], already_run: list[dict], capsys) -> str:
    if "--help" in args:
        with pytest.raises(SystemExit) as done:
            train.parse_config(args)
        assert done.value.code == 0 and "--train.learning_rate" in capsys.readouterr().out
        return "run"
    cfg = resolve_config(train.parse_config(args + SHORTER, exit_on_error=False))
    reason = network_reason(cfg)
    if reason is not None or config_to_dict(cfg) in already_run:
        validate_config(cfg)
        trainer.resolve_tasks(cfg)
        return f"parsed and validated only: {reason or 'the same run as an earlier command once shortened'}"
    results = run_train(args + SHORTER)
    already_run.append(config_to_dict(cfg))
    assert not results.get("interrupted") and results["steps"] == 2, results
    assert Path(cfg.output_dir, "model.safetensors").is_file() and Path(cfg.output_dir, "results.json").is_file()
    return "run, shortened"


def check_command(command: str, already_run: list[dict], monkeypatch, capsys) -> str:
    """Check one README command (see the module docstring); returns how it was checked."""
    words = shlex.split(command)
    if words[:3] == ["pip", "install", "-r"]:
        for line in Path(REPO / words[3]).read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                try:
                    installed = version(requirement.name)
                except PackageNotFoundError:
                    pytest.fail(f"{requirement.name} from {words[3]} is not installed")
                assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
        return "not run (needs a package index): every requirement checked against the installed version"
    if words[:3] == ["python", "-m", "pytest"]:
        test_line = re.search(r"^# test\n(.+)$", README.read_text(encoding="utf-8"), re.M)
        assert test_line and test_line[1].strip() == command, "the README's test command is not its '# test' line"
        return "not run (this suite; .ci/run runs it): it is the README's '# test' line"
    if words[:2] == ["python", "train.py"]:
        return check_train(words[2:], already_run, capsys)
    if words[:3] == ["python", "-m", "camtl.hub"]:
        from camtl import hub

        assert hub.main([*words[3:], "--dry-run"]) == 0
        assert capsys.readouterr().out.rstrip().endswith("Nothing was uploaded and no local file changed.")
        return "run with --dry-run (an upload needs the network)"
    if words[:3] == ["python", "-m", "camtl.serving"]:
        from camtl import serving

        assert serving.main(words[3:]) == 0
        return "run"
    if words[:2] == ["python", "app.py"]:
        import gradio as gr

        import app

        launched = []
        monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **kwargs: launched.append((demo, kwargs)))
        if "--check-examples" in words:  # runs the examples through the model and exits: no server
            assert app.main(words[2:]) == 0 and not launched
            assert "candidates answered as expected" in capsys.readouterr().out
            return "run (the shipped examples through the model)"
        assert app.main(words[2:]) == 0
        ((demo, kwargs),) = launched
        assert demo.predictor.tasks and kwargs["server_name"] == "127.0.0.1"
        return "run with launch replaced (a server runs until stopped): model loaded, page built"
    if words[:3] == ["python", "-m", "camtl.monitoring"]:
        from camtl import monitoring

        out = Path("outputs", "monitoring-" + words[3])  # build-default would rewrite the repository's default_model/
        shorter = ["--held-out-rows", "16", "--train-rows", "16", *([] if "--out" in words else ["--out", str(out)])]
        assert monitoring.main([*words[3:], *shorter]) == 0
        assert monitoring.Reference.load(out).tasks
        return "run, shortened (16 rows a task), into outputs/"
    pytest.fail(f"README command not covered by tests/test_readme.py (add a rule to check_command): {command}")


def test_readme_has_commands():
    commands = readme_commands()
    assert commands[:3] == ["pip install -r requirements.txt", "python train.py", "python -m pytest -q"]
    assert any("--model.init_from" in c for c in commands) and any(c.startswith("python app.py") for c in commands)


def test_every_readme_command_works_as_written(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    already_run: list[dict] = []  # the resolved configurations of the runs so far
    checked = {command: check_command(command, already_run, monkeypatch, capsys) for command in readme_commands()}
    ran = [command for command, how in checked.items() if how == "run, shortened"]
    assert len(ran) >= 3, checked  # at least the quick start, GLUE and continual learning train for real
