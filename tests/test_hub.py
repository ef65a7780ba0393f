"""Publishing: push_model / push_space / the CLI against a local stand-in for the Hub (never the real network).

The stand-in is a small HTTP server on 127.0.0.1 that implements the endpoints huggingface_hub's create_repo,
upload_folder (validate-yaml, preupload, commit) and add_space_variable use; it keeps what it receives.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from camtl import hub
from tests.camtl_fixtures import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_dummy_token_for_the_stand_in"
RESULTS = {
    "tasks": {"sst2": {"accuracy": 0.5, "main": 0.5}, "stsb": {"pearson": 0.1, "spearmanr": 0.2, "main": 0.15}},
    "average": 0.3,
    "data_fraction": 0.05,
    "parameters": {"total": 1000, "trainable": 10},
    "steps": 3,
    "wall_time_s": 1.5,
}


class HubStandIn(ThreadingHTTPServer):
    """Repos as ``{(type, id): {"meta": create payload, "files": {path: bytes}, "variables": {}}}``."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos, self.requests, self.unexpected = {}, [], []
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/api/agent-harnesses":  # huggingface_hub's once-a-day look-up for its user-agent header
            return self._reply(200, {"standardEnvVars": [], "harnesses": {}})
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 4 and parts[:2] in (["api", "models"], ["api", "spaces"]):  # repo info (create_repo's check)
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"error": "bad token"})
            repo = self.server.repos.get((parts[1][:-1], f"{parts[2]}/{parts[3]}"))
            return self._reply(200, {"id": f"{parts[2]}/{parts[3]}"}) if repo else self._reply(404, {"error": "none"})
        self.server.unexpected.append(("GET", self.path))
        self._reply(404, {"error": f"stand-in has no GET {self.path}"})

    def do_POST(self):
        server: HubStandIn = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.requests.append((self.path, self.headers.get("authorization")))
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"error": "bad token"})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["api", "repos", "create"]:
            meta = json.loads(body)
            key = (
                meta.get("type") or "model",
                f"{meta['organization']}/{meta['name']}" if meta.get("organization") else meta["name"],
            )
            if key in server.repos:
                return self._reply(409, {"error": "You already created this repo"})
            server.repos[key] = {"meta": meta, "files": {}, "variables": {}}
            return self._reply(200, {"url": f"{server.endpoint}/{key[1]}"})
        if parts == ["api", "validate-yaml"]:
            return self._reply(200, {"errors": [], "warnings": []})
        if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("models", "spaces"):
            repo = server.repos.get((parts[1][:-1], f"{parts[2]}/{parts[3]}"))
            if repo is None:
                return self._reply(404, {"error": "Repository not found"})
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if parts[4] == "commit":
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        repo["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                return self._reply(
                    200,
                    {
                        "commitUrl": f"{server.endpoint}/{parts[2]}/{parts[3]}/commit/1",
                        "commitOid": "1" * 40,
                        "pullRequestUrl": None,
                    },
                )
            if parts[4] == "variables" and parts[1] == "spaces":
                payload = json.loads(body)
                repo["variables"][payload["key"]] = payload["value"]
                return self._reply(200, {k: {"value": v} for k, v in repo["variables"].items()})
        server.unexpected.append(("POST", self.path))
        return self._reply(404, {"error": f"stand-in has no POST {self.path}"})


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """The stand-in, with huggingface_hub online and pointed at it (it read HF_ENDPOINT/HF_HUB_OFFLINE at import),
    its cache of the agent-harness registry kept in tmp_path."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    server = HubStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    assert not server.unexpected, f"endpoints the stand-in does not know were called: {server.unexpected}"


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "quickstart"
    shutil.copytree(tiny_checkpoint(), folder)
    (folder / "results.json").write_text(json.dumps(RESULTS))
    (folder / "training_config.yaml").write_text(yaml.safe_dump({"seed": 1, "steps": 3}))
    for leftover in ("checkpoints/checkpoint-2/config.json", "logs/camtl/events.out", "optimizer.pt"):  # stay home
        (folder / leftover).parent.mkdir(parents=True, exist_ok=True)
        (folder / leftover).write_bytes(b"{}")
    return folder


def test_push_model_uploads_a_loadable_checkpoint(stand_in, model_folder):
    info = hub.push_model(model_folder, "someone/camtl-tiny")
    repo = stand_in.repos[("model", "someone/camtl-tiny")]
    files = repo["files"]
    assert set(files) == {
        "config.json",
        "configuration_camtl.py",
        "modeling_camtl.py",
        "pipeline_camtl.py",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "results.json",
        "training_config.yaml",
    }
    assert files["model.safetensors"] == (model_folder / "model.safetensors").read_bytes()
    config = json.loads(files["config.json"])
    assert set(config["auto_map"]) == set(hub.AUTO_CLASSES)
    assert config["custom_pipelines"]["camtl-classification"]["impl"] == "pipeline_camtl.CaMtlClassificationPipeline"
    card = files["README.md"].decode()
    assert "library_name: transformers" in card and "model-index" in card
    assert 'pipeline(model="someone/camtl-tiny", trust_remote_code=True)' in card  # card rewritten with the repo id
    assert repo["meta"]["type"] == "model" and repo["meta"].get("visibility", "public") == "public"
    assert info.oid == "1" * 40
    assert all(auth == f"Bearer {TOKEN}" for _, auth in stand_in.requests)


def test_push_model_refuses_an_incomplete_folder_before_any_request(stand_in, model_folder):
    (model_folder / "tokenizer.json").unlink()
    (model_folder / "results.json").unlink()
    with pytest.raises(ValueError, match="tokenizer is missing") as err:
        hub.push_model(model_folder, "someone/camtl-tiny")
    assert "README.md" in str(err.value)
    assert stand_in.requests == []


def test_push_space_creates_a_gradio_space_pointed_at_the_model(stand_in):
    hub.push_space("someone/camtl-demo", "someone/camtl-tiny", private=True)
    repo = stand_in.repos[("space", "someone/camtl-demo")]
    assert repo["meta"]["sdk"] == "gradio" and repo["meta"]["visibility"] == "private"
    assert repo["variables"] == {"CAMTL_MODEL": "someone/camtl-tiny"}
    assert set(repo["files"]) == {"app.py", "app_examples.json", "requirements.txt", "README.md"}
    assert repo["files"]["app.py"] == (ROOT / "app.py").read_bytes()
    front = yaml.safe_load(repo["files"]["README.md"].decode().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert front["models"] == ["someone/camtl-tiny"]
    requirements = repo["files"]["requirements.txt"].decode()
    assert "transformers==5.23.0" in requirements.splitlines()
    # torch pinned to the CPU build: a free Space has no GPU, and PyPI's torch pulls the CUDA packages
    assert "torch==2.13.0" in requirements.splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements.splitlines()


def test_push_space_without_a_model_bundles_the_default_model(stand_in, tmp_path, monkeypatch):
    from camtl import default_model as dm
    from tests.test_default_model import trained_folder

    base = str(tiny_checkpoint().parent / "bert")
    monkeypatch.setattr(dm, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    monkeypatch.setattr(dm, "bundled_base", lambda: base)
    monkeypatch.setenv("CAMTL_CACHE", str(tmp_path / "cache"))
    dm.export_delta(trained_folder(tmp_path, base, upper=False), tmp_path / "default_model", base)
    hub.push_space("someone/camtl-default-demo")
    repo = stand_in.repos[("space", "someone/camtl-default-demo")]
    assert repo["variables"] == {"CAMTL_MODEL": "model"}  # the app serves the bundled folder
    assert {
        "app.py",
        "app_examples.json",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/results.json",
        "model/README.md",
        "model/pipeline_camtl.py",
    } <= set(repo["files"])
    front = yaml.safe_load(repo["files"]["README.md"].decode().split("---")[1])
    assert front["models"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert "bundled in `model/`" in repo["files"]["README.md"].decode()


def test_push_space_without_a_model_when_none_ships(stand_in, tmp_path, monkeypatch, capsys):
    from camtl import default_model as dm

    monkeypatch.setattr(dm, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    assert hub.main(["space", "someone/x", "--token", TOKEN]) == 2
    assert capsys.readouterr().err.startswith("error: No default model in ")
    assert stand_in.requests == []


def test_cli_pushes_through_hf_endpoint(stand_in, model_folder, tmp_path):
    """``python -m camtl.hub`` in a fresh process finds the stand-in through HF_ENDPOINT and the token in HF_TOKEN."""
    env = {
        **os.environ,
        "HF_ENDPOINT": stand_in.endpoint,
        "HF_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    env.pop("HF_HUB_OFFLINE", None)
    for args in (
        ["model", str(model_folder), "someone/cli-model", "--keep-card"],
        ["space", "someone/cli-space", "--model", "someone/cli-model"],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "camtl.hub", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().startswith(stand_in.endpoint)
    assert "model.safetensors" in stand_in.repos[("model", "someone/cli-model")]["files"]
    assert stand_in.repos[("space", "someone/cli-space")]["variables"]["CAMTL_MODEL"] == "someone/cli-model"


def test_cli_reports_an_incomplete_folder(tmp_path, capsys):
    assert hub.main(["model", str(tmp_path), "someone/x", "--token", TOKEN]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def snapshot(folder):
    """Every file under ``folder`` with its bytes: what "no local file changed" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_push_model_changes_no_local_file(stand_in, model_folder):
    """The card is written for the upload (the repo id in its snippets) in a temporary copy, not in the folder."""
    before = snapshot(model_folder)
    hub.push_model(model_folder, "someone/camtl-tiny")
    assert snapshot(model_folder) == before and not (model_folder / "README.md").exists()
    uploaded = stand_in.repos[("model", "someone/camtl-tiny")]["files"]
    assert 'pipeline(model="someone/camtl-tiny"' in uploaded["README.md"].decode()


def test_offline_publishing_is_one_line_and_changes_nothing(model_folder, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = snapshot(model_folder)
    assert hub.main(["model", str(model_folder), "someone/camtl-tiny"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: HF_HUB_OFFLINE is set, so the Hub cannot be reached: no file was uploaded and no local file changed. "
        "Unset HF_HUB_OFFLINE to publish; --dry-run checks the folder without the network."
    ]
    assert hub.main(["space", "someone/camtl-demo", "--model", "someone/camtl-tiny"]) == 1
    assert capsys.readouterr().err.startswith("error: HF_HUB_OFFLINE is set")
    assert snapshot(model_folder) == before


def test_unreachable_hub_is_one_line(model_folder, monkeypatch, capsys):
    """Online, but nothing answers at the endpoint (a closed port): the connection error in one line."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = snapshot(model_folder)
    assert hub.main(["model", str(model_folder), "someone/camtl-tiny"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: Could not reach the Hub at {endpoint} (ConnectError: ")
    assert err[0].endswith(
        "no file was uploaded and no local file changed. Try again when online; --dry-run checks "
        "the folder without the network."
    )
    assert snapshot(model_folder) == before


def test_a_refused_token_is_one_line(stand_in, model_folder, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert hub.main(["model", str(model_folder), "someone/camtl-tiny"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: The Hub at {stand_in.endpoint} refused the request (401: ")
    assert err[0].endswith("Check the token (--token, $HF_TOKEN or `hf auth login`).")
    assert stand_in.repos == {}


def test_dry_run_lists_the_upload_with_sizes_and_changes_nothing(model_folder, capsys):
    before = snapshot(model_folder)
    assert hub.main(["model", str(model_folder), "someone/camtl-tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Dry run: would upload 10 files (") and out[0].endswith(
        "bytes) to the public model repository someone/camtl-tiny at https://huggingface.co:"
    )
    listed = {line.split()[0]: line for line in out[1:-1]}
    assert set(listed) == {
        "config.json",
        "configuration_camtl.py",
        "modeling_camtl.py",
        "pipeline_camtl.py",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "results.json",
        "training_config.yaml",
    }  # no checkpoints/, logs/ or optimizer.pt
    size = (model_folder / "model.safetensors").stat().st_size
    assert listed["model.safetensors"].split()[1:] == [f"{size:,}", "bytes"]
    assert listed["README.md"].endswith("(added for the upload)")
    assert out[-1] == "Nothing was uploaded and no local file changed."
    assert snapshot(model_folder) == before

    assert hub.main(["space", "someone/camtl-demo", "--model", "someone/camtl-tiny", "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "private Space repository someone/camtl-demo" in out[0]
    assert [line.split()[0] for line in out[1:-1]] == ["README.md", "app.py", "app_examples.json", "requirements.txt"]


def test_dry_run_still_checks_the_folder(model_folder, capsys):
    (model_folder / "tokenizer.json").unlink()
    assert hub.main(["model", str(model_folder), "someone/camtl-tiny", "--dry-run"]) == 2
    assert f"error: {model_folder} is not ready for the Hub" in capsys.readouterr().err
