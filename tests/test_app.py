"""The Gradio demo, launched on 127.0.0.1 and queried through gradio_client like any API user would."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import gradio as gr
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
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/predict",
        "/predict_all",
        "/monitoring",
    }
    assert app.os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_predict_classification_and_regression(served):
    _, client = served
    label, score, sure = client.predict("sst2", "A warm, funny film.", "", api_name="/predict")
    assert score is None and {c["label"] for c in label["confidences"]} == {"negative", "positive"}
    assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0)
    assert sure.startswith("**Confidence: ")
    label, score, _ = client.predict("mnli", "A woman reads.", "A woman is outdoors.", api_name="/predict")
    assert label["label"] in ("true", "undecided", "false")  # entailment, neutral, contradiction in plain words
    label, score, sure = client.predict("stsb", "A man plays.", "Someone plays.", api_name="/predict")
    assert isinstance(score, float) and not label and "no confidence cue" in sure


def test_predict_all_runs_compatible_tasks_in_one_batch(served):
    demo, client = served
    seen = []
    handle = demo.predictor.pipe.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["task_ids"].tolist()), with_kwargs=True
    )
    try:
        single = client.predict("A warm, funny film.", "", api_name="/predict_all")
        pair = client.predict("A woman reads.", "A woman is outdoors.", api_name="/predict_all")
    finally:
        handle.remove()
    assert single["headers"] == ["question", "answer", "confidence", "all answers"]
    assert [row[0] for row in single["data"]] == ["SST-2: Is this movie review positive or negative?"]
    assert [row[0].split(":")[0] for row in pair["data"]] == ["RTE", "STS-B", "MNLI"]
    assert seen == [[0], [1, 2, 3]]  # one forward pass each, the pair tasks mixed in one batch
    answer, sure = single["data"][0][1:3]
    assert answer.split(" (")[0] in ("negative", "positive") and sure.split(" (")[0] in (
        "high",
        "medium",
        "low: close to a guess",
    )


@pytest.mark.parametrize(
    "args, api_name, message",
    [
        (("sst2", "   ", ""), "/predict", "Sentence is empty"),
        (("rte", "Only the first.", ""), "/predict", "Sentence 2 is empty: task 'rte' needs Sentence 1 and Sentence 2"),
        (("sst2", "word " * 100, ""), "/predict", f"102 tokens long; this model reads at most {MAX_POSITIONS} tokens"),
        (("nope", "text", ""), "/predict", "Unknown task 'nope'. This model's tasks: sst2, rte, stsb, mnli."),
        (("", ""), "/predict_all", "Sentence is empty"),
        (("word " * 100, "short"), "/predict_all", f"this model reads at most {MAX_POSITIONS} tokens"),
    ],
)
def test_bad_requests_get_clear_errors_and_no_traceback_in_the_log(served, capfd, args, api_name, message):
    _, client = served
    capfd.readouterr()
    with pytest.raises(AppError) as err:  # carries the message the page shows
        client.predict(*args, api_name=api_name)
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert client.predict("sst2", "still serving", "", api_name="/predict")[0]["label"]  # the server goes on
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err, log.err[-2000:]


def test_a_burst_of_concurrent_requests_is_queued_and_answered(served):
    _, client = served
    jobs = [
        client.submit("sst2" if i % 2 else "rte", f"request {i}", "" if i % 2 else "a pair", api_name="/predict")
        for i in range(16)
    ]
    deadline = time.monotonic() + 90  # overall bound for the whole burst
    for job in jobs:
        assert job.result(timeout=max(deadline - time.monotonic(), 0.1))[0]["label"]


def test_task_view_follows_the_task(served):
    demo, _ = served
    about, text, text_pair, label, score, sure = app.task_view(demo.predictor, "sst2")
    assert "answers *negative* / *positive*" in about and text["label"] == "Sentence"
    assert text_pair["visible"] is False and text_pair["value"] == "" and label["visible"] and not score["visible"]
    assert sure["value"] == ""
    _, text, text_pair, label, score, _ = app.task_view(demo.predictor, "mnli")
    assert (text["label"], text_pair["label"], text_pair["visible"]) == ("Premise", "Hypothesis", True)
    assert "value" not in text_pair  # a shown box keeps what the visitor or an example put in it
    _, _, _, label, score, _ = app.task_view(demo.predictor, "stsb")
    assert score["visible"] and not label["visible"] and score["label"] == "Score (0 to 5)"
    tables = [c["props"] for c in demo.config["components"] if c["type"] == "dataset"]
    assert len(tables) == 2  # examples of both tabs; gradio draws none when two inputs share a label
    assert all(len(set(t["headers"])) == len(t["headers"]) for t in tables)
    dropdown = next(c["props"] for c in demo.config["components"] if c["type"] == "dropdown")
    assert list(dropdown["choices"][0]) == ["SST-2: Is this movie review positive or negative?", "sst2"]
    with pytest.raises(gr.Error, match="Unknown task 'typed'"):  # a value typed into the dropdown
        app.task_view(demo.predictor, "typed")


def test_examples_come_from_the_examples_file(served, tmp_path, monkeypatch):
    demo, _ = served
    rows = demo.predictor.examples()
    stored = app.read_examples()
    assert rows[:2] == [["sst2", e["text"], ""] for e in stored["tasks"]["sst2"][:2]]
    assert {r[0] for r in rows} == {"sst2", "rte", "stsb", "mnli"}
    assert all(sum(r[0] == t for r in rows) == app.EXAMPLES_PER_TASK for t in ("sst2", "rte", "stsb", "mnli"))
    assert all(bool(r[2]) == (r[0] != "sst2") for r in rows)  # pair tasks get pairs, sst2 single sentences
    for example in stored["tasks"]["sst2"]:  # independent of which examples the shipped file marks
        example["shown"] = True
    stored["tasks"]["sst2"][0]["shown"] = False
    (tmp_path / "examples.json").write_text(json.dumps(stored))
    monkeypatch.setattr(app, "EXAMPLES_FILE", tmp_path / "examples.json")
    assert [r[1] for r in demo.predictor.examples() if r[0] == "sst2"] == [
        e["text"] for e in stored["tasks"]["sst2"][1:3]
    ]


def test_check_examples_reports_and_marks_what_the_model_gets_right(served, tmp_path, monkeypatch, capsys):
    demo, _ = served
    stored = app.read_examples()
    rows = app.check_examples(demo.predictor, stored)
    assert {r["task"] for r in rows} == {"sst2", "rte", "stsb", "mnli"}  # the model's tasks only
    assert len(rows) == sum(len(stored["tasks"][t]) for t in ("sst2", "rte", "stsb", "mnli"))
    for row in rows:  # ok is the expected label, or a score in the expected range
        expected = row["example"]["expected"]
        assert row["ok"] == (
            expected[0] <= row["got"] <= expected[1] if isinstance(expected, list) else row["got"] == expected
        )
    marked = app.mark_shown(stored, rows, "tiny")
    for task in ("sst2", "rte", "stsb", "mnli"):
        shown = [e for e in marked["tasks"][task] if e["shown"]]
        right = [r["example"] for r in rows if r["task"] == task and r["ok"]]
        assert shown == right[: app.EXAMPLES_PER_TASK]
    assert marked["checked_with"]["model"] == "tiny" and marked["checked_with"]["of"] == len(rows)

    (tmp_path / "examples.json").write_text(json.dumps(app.read_examples()))
    monkeypatch.setattr(app, "EXAMPLES_FILE", tmp_path / "examples.json")
    assert app.main(["--model", str(tiny_checkpoint()), "--check-examples", "--write"]) == 0
    out = capsys.readouterr().out
    assert f"of {len(rows)} candidates answered as expected" in out and "Marked the shown examples" in out
    assert json.loads((tmp_path / "examples.json").read_text())["checked_with"]["of"] == len(rows)


def test_confidence_is_the_models_own_normalised_entropy(served):
    demo, _ = served
    pipe = demo.predictor.pipe
    batch = pipe.tokenizer(
        ["A warm film.", "A woman reads."], ["", "A woman is outdoors."], return_tensors="pt", padding=True
    )
    import torch

    with torch.no_grad():
        out = pipe.model(**batch, task_ids=torch.tensor([0, 3]))
    for row, k in ((0, 2), (1, 3)):
        probs = out.logits[row, :k].softmax(-1).tolist()
        assert app.confidence(probs)[0] == pytest.approx(out.entropy[row].item(), abs=1e-5)
    assert app.confidence([0.5, 0.5]) == (1.0, "low: close to a guess")
    assert app.confidence([0.99, 0.01])[1] == "high" and app.confidence([0.8, 0.2])[1] == "medium"


QUICKSTART_RESULTS = {  # step 20 of `python train.py` on the bundled sample (measured), and its majority classes
    "tasks": {
        "cola": {"mcc": -0.075, "main": -0.075},
        "sst2": {"accuracy": 0.53, "main": 0.53},
        "mrpc": {"f1": 0.817, "accuracy": 0.69, "main": 0.753},
        "stsb": {"pearson": 0.358, "spearman": 0.348, "main": 0.353},
        "rte": {"accuracy": 0.48, "main": 0.48},
    },
    "average": 0.408,
    "eval_rows": dict.fromkeys(["cola", "sst2", "mrpc", "stsb", "rte"], 100),
    "majority_class": {
        "average": 0.351,
        "tasks": {
            "cola": {"mcc": 0.0, "main": 0.0, "answer": "acceptable"},
            "sst2": {"accuracy": 0.52, "main": 0.52, "answer": "positive"},
            "mrpc": {"f1": 0.817, "accuracy": 0.69, "main": 0.753, "answer": "equivalent"},
            "stsb": {"pearson": 0.0, "spearman": 0.0, "main": 0.0, "answer": 2.75},
            "rte": {"accuracy": 0.48, "main": 0.48, "answer": "not_entailment"},
        },
    },
}


def test_quality_warning_for_a_quick_start_model_and_none_for_a_trained_one():
    warning = app.quality_warning(QUICKSTART_RESULTS)  # average 5.7 points above, but 4 of 5 tasks at majority
    assert warning.startswith(
        "**This model's answers are close to guesses.** On 4 of its 5 tasks it does no "
        "better than always giving the task's most common answer (dev average 0.41; the most "
        "common answers: 0.35)."
    )
    trained = json.loads(json.dumps(QUICKSTART_RESULTS))
    for name, main in {"cola": 0.45, "sst2": 0.88, "mrpc": 0.82, "stsb": 0.85, "rte": 0.62}.items():
        trained["tasks"][name]["main"] = main
    trained["average"] = 0.724
    assert app.quality_warning(trained) is None
    assert "holds no dev results" in app.quality_warning({})
    assert app.quality_warning({"tasks": QUICKSTART_RESULTS["tasks"], "average": 0.408}) is None  # no reference


def test_the_page_explains_tasks_and_scores_in_plain_words():
    predictor = app.Predictor(
        str(tiny_checkpoint()),
        results={
            "tasks": {
                "sst2": {"accuracy": 0.881, "main": 0.881},
                "rte": {"accuracy": 0.5, "main": 0.5},
                "stsb": {"pearson": 0.853, "spearman": 0.85, "main": 0.851},
            },
            "average": 0.744,
            "eval_rows": {"sst2": 872, "rte": 277, "stsb": 1500},
            "majority_class": {
                "average": 0.34,
                "tasks": {
                    "sst2": {"accuracy": 0.51, "main": 0.51, "answer": "positive"},
                    "rte": {"accuracy": 0.527, "main": 0.527, "answer": "not_entailment"},
                    "stsb": {"pearson": 0.0, "spearman": 0.0, "main": 0.0, "answer": 2.7},
                },
            },
        },
    )
    assert predictor.warning is None
    assert predictor.describe("sst2") == (
        "**SST-2: Is this movie review positive or negative?** The model reads *Sentence* and answers *negative* / "
        '*positive*. On data it never trained on: right on 88% of 872 dev examples; always answering "positive" '
        "would be right on 51%."
    )
    assert "correlation with human ratings 0.85 (1: perfect agreement)" in predictor.describe("stsb")
    rte = predictor.describe("rte")
    assert "answers *yes, it follows* / *no, it does not follow*" in rte
    assert "(**no better than always giving the most common answer**)" in rte
    assert "Its dev score is unknown." in predictor.describe("mnli")
    predictor.results["comparison"] = {
        "rows": [
            {"arm": "recipe", "tasks": {"sst2": {"mean": 0.9, "std": 0.0}}},
            {"arm": "single-task", "seeds": [42, 43, 44], "lr": {"sst2": 2e-4}, "tasks": {"sst2": {"mean": 0.874}}},
            {
                "arm": "single-task @ 0.0001",
                "seeds": [42, 43],
                "lr": {"sst2": 1e-4},
                "tasks": {"sst2": {"mean": 0.879}},
            },
            {"arm": "single-task @ 5e-05", "seeds": [42], "lr": {"sst2": 5e-5}, "tasks": {"sst2": {"mean": 0.861}}},
        ]
    }
    assert predictor.describe("sst2").endswith(  # the strongest of the single-task rows, named
        "would be right on 51%. A separate model fine-tuned on this task alone scores 0.88 on its main dev metric "
        "(the strongest single-task baseline measured: lr 0.0001, mean of 2 seeds), this one 0.88."
    )
    assert "fine-tuned on this task alone" not in predictor.describe("rte")  # no single-task score for it
    demo = app.build_demo(app.Predictor(str(tiny_checkpoint()), results=QUICKSTART_RESULTS))
    warning = [c["props"]["value"] for c in demo.config["components"] if c["props"].get("elem_id") == "quality-warning"]
    assert len(warning) == 1 and "<b>This model&#x27;s answers are close to guesses.</b>" in warning[0]


def test_missing_checkpoint_says_the_folder_does_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAMTL_MODEL", raising=False)
    (tmp_path / "outputs" / "quickstart").mkdir(parents=True)
    (tmp_path / "outputs" / "quickstart" / "config.json").write_text("{}")
    assert app.main(["--model", "outputs/typo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The folder 'outputs/typo' does not exist. Checkpoints in outputs/: quickstart.")
    assert "huggingface.co" not in err and "Traceback" not in err
    for path in ("./typo", str(tmp_path / "nowhere"), "no_slash_name"):
        with pytest.raises(app.CheckpointNotFoundError, match="does not exist"):
            app.resolve_model(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(app.CheckpointNotFoundError, match="holds no config.json"):
        app.resolve_model(str(tmp_path / "empty"))
    with pytest.raises(
        app.CheckpointNotFoundError,
        match=r"^Could not load the CA-MTL checkpoint 'elsewhere/typo' "
        r"\(no such folder here, so it was tried as a Hub model id\)",
    ):
        app.Predictor("elsewhere/typo")  # shaped like a Hub id, and no folder elsewhere/ here
    monkeypatch.setenv("CAMTL_MODEL", str(tiny_checkpoint()))
    assert app.resolve_model() == (str(tiny_checkpoint()), str(tiny_checkpoint()))
    assert app.resolve_model("someone/camtl-glue")[0] == "someone/camtl-glue"  # a Hub id, loaded on demand


def test_without_a_model_the_default_model_is_served_or_one_line_says_none_ships(tmp_path, monkeypatch, capsys):
    from camtl import default_model as dm
    from tests.test_default_model import trained_folder

    monkeypatch.delenv("CAMTL_MODEL", raising=False)
    monkeypatch.setattr(dm, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    assert app.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: No default model in ") and "python train.py" in err

    base = str(tiny_checkpoint().parent / "bert")
    dm.export_delta(trained_folder(tmp_path, base, upper=True), tmp_path / "default_model", base)
    monkeypatch.setattr(dm, "bundled_base", lambda: base)
    monkeypatch.setenv("CAMTL_CACHE", str(tmp_path / "cache"))
    predictor = app.Predictor(None)
    assert predictor.name == app.DEFAULT_MODEL_LABEL and predictor.results["average"] == 0.7
    assert "right on 70% of 872 dev examples" in predictor.describe("sst2")
    assert set(predictor.predict("sst2", "A fine film.", "")[0]) == {"negative", "positive"}


def test_a_truncated_checkpoint_is_named(tmp_path, capsys):
    """model.safetensors cut short (a copy or download that did not finish): one line naming the file."""
    folder = tmp_path / "cut"
    shutil.copytree(tiny_checkpoint(), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert app.main(["--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: Could not load the CA-MTL checkpoint {str(folder)!r}: Damaged or incomplete weights "
        f"file: {weights} (Error while deserializing header: incomplete metadata, file not fully covered)."
        " It was probably cut short while being written or downloaded: save it again, or delete it and "
        "download it again."
    )


SPACE_CHECK = """
import json, importlib.util, app
assert importlib.util.find_spec("modeling_camtl") is None and importlib.util.find_spec("camtl") is None
predictor = app.Predictor(None)  # CAMTL_MODEL, as the Space variable sets it
print(json.dumps({"class": type(predictor.pipe).__module__, "one": predictor.predict("sst2", "fine", ""),
                  "all": predictor.predict_all("A man plays.", "Someone plays."), "about": predictor.describe("sst2"),
                  "examples": predictor.examples()}))
"""


def test_the_space_folder_serves_the_bundled_default_model_on_its_own_pipeline(tmp_path, monkeypatch):
    """What push_space uploads without a model repository, run where the package is not importable: the default
    model bundled in model/, its pipeline from the checkpoint, its scores from its results.json."""
    from camtl import default_model as dm
    from camtl.hub import make_space_folder, space_model_variable
    from tests.test_default_model import trained_folder

    base = str(tiny_checkpoint().parent / "bert")
    monkeypatch.setattr(dm, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    monkeypatch.setattr(dm, "bundled_base", lambda: base)
    monkeypatch.setenv("CAMTL_CACHE", str(tmp_path / "cache"))
    dm.export_delta(trained_folder(tmp_path, base, upper=True), tmp_path / "default_model", base)
    space = make_space_folder(tmp_path / "space")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CAMTL_MODEL=space_model_variable(None), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run(
        [sys.executable, "-c", SPACE_CHECK], cwd=space, env=env, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["class"].startswith("transformers_modules.")
    assert set(out["one"][0]) == {"negative", "positive"} and out["one"][1] is None
    assert [row[0].split(":")[0] for row in out["all"]] == ["RTE", "STS-B"]
    assert "right on 70% of 872 dev examples" in out["about"]  # the bundled model's results.json
    assert [row[0] for row in out["examples"]] == ["sst2", "sst2", "rte", "rte", "stsb", "stsb"]


def test_a_model_object_or_a_pipeline_serves_too():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint(), trust_remote_code=True)
    model.tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint())  # as from_bert attaches it
    predictor = app.Predictor(model)
    assert set(predictor.predict("sst2", "fine", "")[0]) == {"negative", "positive"}
    assert app.Predictor(predictor.pipe).pipe is predictor.pipe


def test_monitoring_tab_shows_each_tasks_status_over_the_traffic_served(glue_dir):
    from camtl.tasks import load_split
    from tests.camtl_fixtures import tiny_reference

    demo = app.build_demo(str(tiny_checkpoint()), reference=tiny_reference(), monitor_window=50)
    tabs = [c["props"].get("label") for c in demo.config["components"] if c["type"] == "tabitem"]
    assert tabs == ["One task", "All tasks at once", "Monitoring"]
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        table, details = client.predict(api_name="/monitoring")
        assert [row[:3] for row in table["data"]] == [["sst2", "ok", "0 of 0"], ["rte", "ok", "0 of 0"]]
        for text in load_split("sst2", "validation", glue_dir, max_rows=35, seed=1)["text_a"]:
            client.predict("sst2", text, "", api_name="/predict")
        client.predict("rte", "A man plays.", "Someone plays.", api_name="/predict")
        table, details = client.predict(api_name="/monitoring")
    finally:
        demo.close()
    rows = {row[0]: row for row in table["data"]}
    assert rows["sst2"][1] in app.STATUS_WORDS.values() and rows["sst2"][2] == "35 of 35"
    assert rows["sst2"][3].endswith(f"reference {tiny_reference().tasks['sst2'].meta['accuracy']:.1%})")
    assert "(ATC; mean confidence " in rows["sst2"][3]
    assert rows["rte"][2] == "1 of 1" and "too few requests" in rows["rte"][4]
    assert "| representation |" in details and "**rte: ok**" in details


def test_the_flag_beside_an_answer_fires_on_unreadable_inputs():
    from tests.camtl_fixtures import tiny_reference

    demo = app.build_demo(str(tiny_checkpoint()), reference=tiny_reference())
    predictor, monitoring = demo.predictor, demo.monitoring
    for text in ("😀😀😀", "x" * 5000):
        predictor.predict("sst2", text)
        assert "Unusual input" in monitoring.flag_note("sst2", text), text
    predictor.predict("sst2", "A warm, funny film.")
    assert "Unusual input" not in monitoring.flag_note("sst2", "A warm, funny film.")
    predictor.predict("stsb", "A man plays.", "Someone plays.")  # a task without a reference: no flag, no error
    assert monitoring.flag_note("stsb", "A man plays.", "Someone plays.") == ""


def test_without_a_reference_the_tab_says_how_to_make_one(served):
    demo, client = served
    assert demo.monitoring.monitor is None and "python -m camtl.monitoring build" in demo.monitoring.details()
    table, details = client.predict(api_name="/monitoring")
    assert table["data"] in ([], [["", "", "", "", ""]]) and "no monitoring reference" in details
