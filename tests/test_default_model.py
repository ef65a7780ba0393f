"""The default model's shipping form: export a trained model as its fp16 difference from the base, rebuild it into
a normal checkpoint folder, refuse another base or a corrupt delta; the real MiniLM sizes of both training modes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from camtl import default_model as dm
from modeling_camtl import CaMtlForMultiTask
from tests.camtl_fixtures import TASKS as FIXTURE_TASKS
from tests.camtl_fixtures import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TASKS = FIXTURE_TASKS[:3]  # sst2, rte, stsb
TEXTS = (["A warm, funny film.", "The museum opened in 1901.", "A man plays a guitar."],
         [None, "The museum is old.", "Someone plays music."])


def perturb(model, names, scale=0.05, seed=0):
    """Stand-in for training: add noise to the named tensors."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name in names:
            state[name].add_(scale * torch.randn(state[name].shape, generator=generator))


def trained_folder(root: Path, base: str, upper: bool, average: float = 0.7, seed: int = 0) -> Path:
    """A CA-MTL model on ``base`` with its CA-MTL tensors and heads changed (and the upper half of the encoder when
    ``upper``: the paper's mode), saved as train.py saves one: weights, results.json, training_config.yaml."""
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, task_embedding_dim=8, adapter_size=8)
    layers = model.config.num_hidden_layers
    changed = [n for n in model.state_dict() if "camtl_" in n or n.startswith("heads.")]
    if upper:
        changed += [n for n in model.state_dict() if "camtl_" not in n and any(
            n.startswith(f"bert.encoder.layer.{i}.") for i in range(layers // 2, layers))]
    perturb(model, changed, seed=seed)
    folder = root / f"run-{'paper' if upper else 'adapters'}-{seed}"
    model.save_pretrained(folder)
    results = {"tasks": {"sst2": {"accuracy": average, "main": average}, "rte": {"accuracy": 0.6, "main": 0.6},
                         "stsb": {"pearson": 0.8, "spearman": 0.79, "main": 0.795}},
               "average": average, "eval_rows": {"sst2": 872, "rte": 277, "stsb": 1500},
               "majority_class": {"tasks": {"sst2": {"accuracy": 0.51, "main": 0.51, "answer": "positive"}},
                                  "average": 0.36},
               "loss_history": [{"step": 1, "loss": 1.0}], "command_line": f"train.py --output_dir {folder}"}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "training_config.yaml").write_text(yaml.safe_dump(
        {"output_dir": str(folder), "model": {"base_model": base, "trainable": "paper" if upper else "adapters"},
         "data": {"data_dir": str(root / "glue"), "tasks": ["sst2", "rte", "stsb"]}}))
    return folder


def logits(model, tokenizer):
    batch = tokenizer(TEXTS[0], [t or "" for t in TEXTS[1]], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch, task_ids=torch.tensor([0, 1, 2])).logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny BERT base, a paper-mode model trained on it, its export and its rebuild."""
    root = tmp_path_factory.mktemp("default")
    base = str(tiny_checkpoint().parent / "bert")
    folder = trained_folder(root, base, upper=True)
    shipped = dm.export_delta(folder, root / "default_model", base)
    rebuilt = dm.ensure_default_model(shipped, cache=root / "cache", base=base)
    return {"root": root, "base": base, "folder": folder, "shipped": shipped, "rebuilt": rebuilt}


def test_export_holds_only_what_differs_from_the_base_in_fp16(tiny):
    shipped = tiny["shipped"]
    assert sorted(p.name for p in shipped.iterdir()) == ["README.md", "config.json", "delta.safetensors",
                                                         "manifest.json", "results.json", "training_config.yaml"]
    manifest = json.loads((shipped / "manifest.json").read_text())
    delta = load_file(str(shipped / "delta.safetensors"))
    assert set(delta) == set(manifest["new"]) | set(manifest["residual"])
    assert all(t.dtype == torch.float16 for t in delta.values())
    assert all("camtl_" in n or n.startswith("heads.") for n in manifest["new"])
    # the paper's mode: the upper layer changed (differences), the embeddings and the lower layer did not
    assert manifest["residual"] and all(n.startswith("bert.encoder.layer.1.") for n in manifest["residual"])
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in delta)
    assert manifest["trainable"] == "paper" and len(manifest["base_fingerprint"]) == 64
    results = json.loads((shipped / "results.json").read_text())
    assert "loss_history" not in results and "command_line" not in results  # what the app and card need only
    assert results["majority_class"]["average"] == 0.36 and results["eval_rows"]["sst2"] == 872
    text = "".join(p.read_text() for p in shipped.iterdir() if p.suffix in (".json", ".yaml", ".md"))
    assert str(tiny["root"]) not in text  # no local path ships


def test_the_rebuilt_folder_computes_what_the_trained_model_computes(tiny):
    from transformers import AutoTokenizer

    trained = CaMtlForMultiTask.from_pretrained(tiny["folder"])
    rebuilt = CaMtlForMultiTask.from_pretrained(tiny["rebuilt"])
    tokenizer = AutoTokenizer.from_pretrained(tiny["rebuilt"])
    expected, got = logits(trained, tokenizer), logits(rebuilt, tokenizer)
    assert torch.allclose(got, expected, atol=2e-3, rtol=2e-3), (got - expected).abs().max()
    mine, theirs = rebuilt.state_dict(), trained.state_dict()
    manifest = json.loads((tiny["shipped"] / "manifest.json").read_text())
    for name in manifest["residual"]:  # base + fp16(trained - base): far closer than fp16 of the value
        assert (mine[name] - theirs[name]).abs().max() < 1e-4, name
    for name in set(theirs) - set(manifest["new"]) - set(manifest["residual"]):
        assert torch.equal(mine[name], theirs[name]), name  # straight from the base
    for name in ("README.md", "results.json", "training_config.yaml", "tokenizer.json", "pipeline_camtl.py",
                 "modeling_camtl.py", "configuration_camtl.py"):
        assert (tiny["rebuilt"] / name).is_file(), name
    assert rebuilt.config.tasks == trained.config.tasks


def test_a_second_call_reuses_the_folder(tiny, monkeypatch):
    monkeypatch.setattr(dm, "rebuild", lambda *a: pytest.fail("rebuilt twice"))
    assert dm.ensure_default_model(tiny["shipped"], cache=tiny["root"] / "cache", base=tiny["base"]) == tiny["rebuilt"]
    assert not [p for p in (tiny["root"] / "cache").iterdir() if p.name.startswith(".")]  # no half-built folder


LOAD_CHECK = """
import importlib.util, json, sys
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline
assert importlib.util.find_spec("modeling_camtl") is None
folder = sys.argv[1]
AutoModel.from_pretrained(folder, trust_remote_code=True)
AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
pipe = pipeline(model=folder, trust_remote_code=True)
print(json.dumps(pipe({"text": "A man plays.", "text_pair": "Someone plays."}, task_name="stsb")))
"""


def test_the_rebuilt_folder_loads_with_remote_code_alone(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(tiny["rebuilt"])], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "score" in json.loads(run.stdout.strip().splitlines()[-1])


def test_another_base_is_refused_naming_both_fingerprints(tiny, tmp_path):
    from transformers import BertModel

    other = BertModel.from_pretrained(tiny["base"])
    with torch.no_grad():
        other.embeddings.word_embeddings.weight[5, 0] += 1.0  # same shape, one weight different
    other.save_pretrained(tmp_path / "other")
    expected = json.loads((tiny["shipped"] / "manifest.json").read_text())["base_fingerprint"]
    with pytest.raises(ValueError, match="is not the base the default model was exported against") as err:
        dm.ensure_default_model(tiny["shipped"], cache=tmp_path / "cache", base=str(tmp_path / "other"))
    assert expected[:16] in str(err.value) and str(tmp_path / "other") in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_corrupt_delta_or_a_missing_model_is_refused(tiny, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny["shipped"], broken)
    data = bytearray((broken / "delta.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (broken / "delta.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"delta.safetensors is corrupt: its sha256"):
        dm.ensure_default_model(broken, cache=tmp_path / "cache", base=tiny["base"])
    with pytest.raises(dm.DefaultModelMissingError, match=r"No default model in .*manifest.json, delta.safetensors"):
        dm.ensure_default_model(tmp_path / "nothing", cache=tmp_path / "cache")


def test_choose_ships_the_smallest_delta_within_one_point_and_the_cli_exports_it(tiny, capsys):
    root, base = tiny["root"], tiny["base"]
    paper = trained_folder(root, base, upper=True, average=0.700, seed=1)
    adapters = trained_folder(root, base, upper=False, average=0.692, seed=2)  # 0.8 points below: still chosen
    folder, rows = dm.choose([paper, adapters], tolerance=1.0, base=base)
    assert folder == adapters and rows[1]["delta_bytes"] < rows[0]["delta_bytes"]
    assert dm.choose([paper, adapters], tolerance=0.5, base=base)[0] == paper  # now too far below the best
    out = root / "cli_export"
    assert dm.main(["export", str(paper), str(adapters), "--out", str(out), "--base", base]) == 0
    printed = capsys.readouterr().out
    assert f"-> {adapters}: dev average 69.2" in printed and f"   {paper}: dev average 70.0" in printed
    assert json.loads((out / "manifest.json").read_text())["residual"] == []  # the adapters model: no base tensor
    assert dm.main(["export", str(root / "nowhere"), "--out", str(out), "--base", base]) == 2
    assert "is not a trained CA-MTL folder" in capsys.readouterr().err


def test_missing_majority_reference_is_computed_from_the_data(tiny, tmp_path, sample_dir):
    folder = trained_folder(tmp_path, tiny["base"], upper=False)
    results = json.loads((folder / "results.json").read_text())
    del results["majority_class"], results["eval_rows"]  # a run made before train.py recorded them
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="pass --data_dir"):
        dm.export_delta(folder, tmp_path / "out", tiny["base"])
    shipped = dm.export_delta(folder, tmp_path / "out", tiny["base"], data_dir=str(sample_dir))
    saved = json.loads((shipped / "results.json").read_text())
    assert saved["eval_rows"] == {"sst2": 100, "rte": 100, "stsb": 100}
    assert set(saved["majority_class"]["tasks"]) == {"sst2", "rte", "stsb"}
    config = yaml.safe_load((folder / "training_config.yaml").read_text())
    config["data"]["data_dir"] = str(sample_dir.resolve())  # as train.py records it: absolute
    (folder / "training_config.yaml").write_text(yaml.safe_dump(config))
    shipped = dm.export_delta(folder, tmp_path / "out", tiny["base"])  # the data folder the run names
    assert json.loads((shipped / "results.json").read_text())["majority_class"] == saved["majority_class"]
    assert yaml.safe_load((shipped / "training_config.yaml").read_text())["data"]["data_dir"] == "data/sample/glue"


def test_minilm_delta_sizes_of_both_training_modes(tmp_path):
    """The real base: the adapters mode ships under 1 MB, the paper's mode (upper three layers trained) about 12 MB,
    both rebuilt from the bundled base with its fingerprint."""
    base = dm.bundled_base()
    sizes = {}
    for upper in (False, True):
        model = CaMtlForMultiTask.from_bert(base, tasks=TASKS)
        changed = [n for n in model.state_dict() if "camtl_" in n or n.startswith("heads.")]
        if upper:
            changed += [n for n in model.state_dict() if "camtl_" not in n and n.startswith(
                ("bert.encoder.layer.3.", "bert.encoder.layer.4.", "bert.encoder.layer.5.", "bert.pooler."))]
        perturb(model, changed)
        sizes[upper] = dm.delta_bytes(dm.compute_delta(model, base))
    assert sizes[False] < 2**20 and 10 * 2**20 < sizes[True] < 14 * 2**20, sizes


def test_minilm_round_trip_through_the_bundled_base(tmp_path):
    from transformers import AutoTokenizer

    folder = trained_folder(tmp_path, dm.bundled_base(), upper=False)
    shipped = dm.export_delta(folder, tmp_path / "default_model")
    assert json.loads((shipped / "manifest.json").read_text())["base_model"] == dm.BASE_MODEL_ID
    assert (shipped / "delta.safetensors").stat().st_size < 2**20
    rebuilt = dm.ensure_default_model(shipped, cache=tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(rebuilt)
    expected = logits(CaMtlForMultiTask.from_pretrained(folder), tokenizer)
    got = logits(CaMtlForMultiTask.from_pretrained(rebuilt), tokenizer)
    assert torch.allclose(got, expected, atol=2e-3, rtol=2e-3), (got - expected).abs().max()


def test_the_repository_holds_no_file_over_16_mb():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    sizes = {name: (ROOT / name).stat().st_size for name in tracked.stdout.split("\0") if (ROOT / name).is_file()}
    assert sizes and not {n: s for n, s in sizes.items() if s > dm.MAX_FILE_BYTES}
