"""The Gradio demo, launched on 127.0.0.1 and queried through gradio_client like any API user would."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from tests.camtl_fixtures import MAX_POSITIONS, tiny_checkpoint

LOOPBACK = {"127.0.0.1", "localhost", "::1", None}


@pytest.fixture(scope="module")
def served():
    """The demo over the tiny checkpoint, launched with every outside connection refused; yields (demo, client)."""
    outside = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            outside.append(address)
            raise OSError(f"test: no network beyond loopback ({address})")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            outside.append(host)
            raise socket.gaierror(f"test: no look-ups beyond loopback ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        demo = app.build_demo(str(tiny_checkpoint()))
        demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
        try:
            client = Client(demo.local_url, verbose=False)
            assert outside == [], f"the app reached beyond loopback at launch: {outside}"
            yield demo, client
        finally:
            demo.close()


def test_api_names_and_no_analytics(served):
    _, client = served
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/predict",
                                                                                              "/predict_all"}
    assert app.os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_predict_classification_and_regression(served):
    _, client = served
    label, score = client.predict("sst2", "A warm, funny film.", "", api_name="/predict")
    assert score is None and {c["label"] for c in label["confidences"]} == {"negative", "positive"}
    assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0)
    label, score = client.predict("mnli", "A woman reads.", "A woman is outdoors.", api_name="/predict")
    assert label["label"] in ("entailment", "neutral", "contradiction")
    label, score = client.predict("stsb", "A man plays.", "Someone plays.", api_name="/predict")
    assert isinstance(score, float) and not label


def test_predict_all_runs_compatible_tasks_in_one_batch(served):
    demo, client = served
    seen = []
    handle = demo.predictor.pipe.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["task_ids"].tolist()), with_kwargs=True)
    try:
        single = client.predict("A warm, funny film.", "", api_name="/predict_all")
        pair = client.predict("A woman reads.", "A woman is outdoors.", api_name="/predict_all")
    finally:
        handle.remove()
    assert single["headers"] == ["task", "prediction", "score", "details"]
    assert [row[0] for row in single["data"]] == ["sst2"]
    assert [row[0] for row in pair["data"]] == ["rte", "stsb", "mnli"]
    assert seen == [[0], [1, 2, 3]]  # one forward pass each, the pair tasks mixed in one batch


@pytest.mark.parametrize("args, api_name, message", [
    (("sst2", "   ", ""), "/predict", "Sentence is empty"),
    (("rte", "Only the first.", ""), "/predict", "Sentence 2 is empty: task 'rte' needs Sentence 1 and Sentence 2"),
    (("sst2", "word " * 100, ""), "/predict", f"102 tokens long; this model reads at most {MAX_POSITIONS} tokens"),
    (("nope", "text", ""), "/predict", "nope is not in the list of choices: ['sst2', 'rte', 'stsb', 'mnli']"),
    (("", ""), "/predict_all", "Sentence is empty"),
    (("word " * 100, "short"), "/predict_all", f"this model reads at most {MAX_POSITIONS} tokens"),
])
def test_bad_requests_get_clear_errors(served, args, api_name, message):
    _, client = served
    with pytest.raises(AppError) as err:  # carries the message the page shows
        client.predict(*args, api_name=api_name)
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert client.predict("sst2", "still serving", "", api_name="/predict")[0]["label"]  # the server goes on


def test_a_burst_of_concurrent_requests_is_queued_and_answered(served):
    _, client = served
    jobs = [client.submit("sst2" if i % 2 else "rte", f"request {i}", "" if i % 2 else "a pair", api_name="/predict")
            for i in range(16)]
    deadline = time.monotonic() + 90  # overall bound for the whole burst
    for job in jobs:
        assert job.result(timeout=max(deadline - time.monotonic(), 0.1))[0]["label"]


def test_task_view_follows_the_task(served):
    demo, _ = served
    about, text, text_pair, label, score = app.task_view(demo.predictor, "sst2")
    assert "`negative`, `positive`" in about and text["label"] == "Sentence"
    assert text_pair["visible"] is False and text_pair["value"] == "" and label["visible"] and not score["visible"]
    _, text, text_pair, label, score = app.task_view(demo.predictor, "mnli")
    assert (text["label"], text_pair["label"], text_pair["visible"]) == ("Premise", "Hypothesis", True)
    _, _, _, label, score = app.task_view(demo.predictor, "stsb")
    assert score["visible"] and not label["visible"] and score["label"] == "Score (0 to 5)"
    assert {row[0] for row in demo.predictor.examples()} == {"sst2", "rte", "stsb", "mnli"}
    tables = [c["props"] for c in demo.config["components"] if c["type"] == "dataset"]
    assert len(tables) == 2  # examples of both tabs; gradio draws none when two inputs share a label
    assert all(len(set(t["headers"])) == len(t["headers"]) for t in tables)


def test_missing_checkpoint_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAMTL_MODEL", raising=False)
    with pytest.raises(app.CheckpointNotFoundError, match=r"python train.py.*outputs/quickstart"):
        app.resolve_model()
    assert app.main(["--model", str(tmp_path / "nowhere")]) == 2
    assert "No CA-MTL checkpoint at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(app.CheckpointNotFoundError, match="holds no config.json"):
        app.resolve_model(str(tmp_path / "empty"))
    monkeypatch.setenv("CAMTL_MODEL", str(tiny_checkpoint()))
    assert app.resolve_model() == str(tiny_checkpoint())
    assert app.resolve_model("someone/camtl-glue") == "someone/camtl-glue"  # a Hub id, loaded on demand


def test_a_truncated_checkpoint_is_named(tmp_path, capsys):
    """model.safetensors cut short (a copy or download that did not finish): one line naming the file."""
    folder = tmp_path / "cut"
    shutil.copytree(tiny_checkpoint(), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert app.main(["--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: Could not load the CA-MTL checkpoint {str(folder)!r}: Damaged or incomplete weights "
                   f"file: {weights} (Error while deserializing header: incomplete metadata, file not fully covered)."
                   " It was probably cut short while being written or downloaded: save it again, or delete it and "
                   "download it again.")


SPACE_CHECK = """
import json, importlib.util, app
assert importlib.util.find_spec("modeling_camtl") is None
predictor = app.Predictor(None)  # CAMTL_MODEL, as the Space variable sets it
print(json.dumps({"class": type(predictor.pipe).__module__, "one": predictor.predict("sst2", "fine", ""),
                  "all": predictor.predict_all("A man plays.", "Someone plays.")}))
"""


def test_the_space_folder_runs_on_the_checkpoints_own_pipeline(tmp_path):
    """What push_space uploads, run where the package is not importable: the pipeline comes with the checkpoint."""
    from camtl.hub import make_space_folder

    space = make_space_folder(tmp_path / "space", "someone/camtl-tiny")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CAMTL_MODEL=str(tiny_checkpoint()), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-c", SPACE_CHECK], cwd=space, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["class"].startswith("transformers_modules.")
    assert set(out["one"][0]) == {"negative", "positive"} and out["one"][1] is None
    assert [row[0] for row in out["all"]] == ["rte", "stsb", "mnli"]


def test_a_model_object_or_a_pipeline_serves_too():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint(), trust_remote_code=True)
    model.tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint())  # as from_bert attaches it
    predictor = app.Predictor(model)
    assert set(predictor.predict("sst2", "fine", "")[0]) == {"negative", "positive"}
    assert app.Predictor(predictor.pipe).pipe is predictor.pipe
