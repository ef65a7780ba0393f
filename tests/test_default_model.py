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
TEXTS = (
    ["A warm, funny film.", "The museum opened in 1901.", "A man plays a guitar."],
    [None, "The museum is old.", "Someone plays music."],
)


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
        changed += [
            n
            for n in model.state_dict()
            if "camtl_" not in n and any(n.startswith(f"bert.encoder.layer.{i}.") for i in range(layers // 2, layers))
        ]
    perturb(model, changed, seed=seed)
    folder = root / f"run-{'paper' if upper else 'adapters'}-{seed}"
    model.save_pretrained(folder)
    results = {
        "tasks": {
            "sst2": {"accuracy": average, "main": average},
            "rte": {"accuracy": 0.6, "main": 0.6},
            "stsb": {"pearson": 0.8, "spearman": 0.79, "main": 0.795},
        },
        "average": average,
        "eval_rows": {"sst2": 872, "rte": 277, "stsb": 1500},
        "majority_class": {"tasks": {"sst2": {"accuracy": 0.51, "main": 0.51, "answer": "positive"}}, "average": 0.36},
        "loss_history": [{"step": 1, "loss": 1.0}],
        "command_line": f"train.py --output_dir {folder}",
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "training_config.yaml").write_text(
        yaml.safe_dump(
            {
                "output_dir": str(folder),
                "model": {"base_model": base, "trainable": "paper" if upper else "adapters"},
                "data": {"data_dir": str(root / "glue"), "tasks": ["sst2", "rte", "stsb"]},
                "train": {"seed": 42 + seed},
            }
        )
    )
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
    assert sorted(p.name for p in shipped.iterdir()) == [
        "README.md",
        "config.json",
        "delta.safetensors",
        "manifest.json",
        "results.json",
        "training_config.yaml",
    ]
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
    for name in (
        "README.md",
        "results.json",
        "training_config.yaml",
        "tokenizer.json",
        "pipeline_camtl.py",
        "modeling_camtl.py",
        "configuration_camtl.py",
    ):
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
    run = subprocess.run(
        [sys.executable, "-c", LOAD_CHECK, str(tiny["rebuilt"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
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
    with pytest.raises(dm.DefaultModelMissingError, match=r"No default model in .*manifest.json, config.json"):
        dm.ensure_default_model(tmp_path / "nothing", cache=tmp_path / "cache")


def test_a_delta_over_the_file_limit_ships_in_shards_that_rebuild_the_same_model(tiny, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(dm, "HEADER_ROOM", 4096)  # the tiny model's shards hold a few tensors each
    whole = (tiny["shipped"] / "delta.safetensors").stat().st_size
    limit = whole // 3
    shipped = dm.export_delta(tiny["folder"], tmp_path / "sharded", tiny["base"], max_file_bytes=limit)
    shards = sorted(p.name for p in shipped.glob("delta*.safetensors"))
    count = len(shards)
    assert count >= 3 and shards == [f"delta-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert all((shipped / name).stat().st_size <= limit for name in shards)
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and [f["name"] for f in manifest["files"]] == shards
    one_file = json.loads((tiny["shipped"] / "manifest.json").read_text())
    assert one_file["format_version"] == 1 and "files" not in one_file  # what fits one file stays format 1

    rebuilt = dm.ensure_default_model(shipped, cache=tmp_path / "cache", base=tiny["base"])
    assert rebuilt.name == f"default-model-{manifest['delta_sha256'][:16]}"
    got = load_file(str(rebuilt / "model.safetensors"))
    expected = load_file(str(tiny["rebuilt"] / "model.safetensors"))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)

    broken = tmp_path / "broken"
    shutil.copytree(shipped, broken)
    data = bytearray((broken / shards[1]).read_bytes())
    data[-3] ^= 0xFF
    (broken / shards[1]).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{shards[1]} is corrupt: its sha256"):
        dm.ensure_default_model(broken, cache=tmp_path / "cache2", base=tiny["base"])
    (broken / shards[-1]).unlink()
    with pytest.raises(dm.DefaultModelMissingError, match=rf"\({shards[-1]} missing\)"):
        dm.ensure_default_model(broken, cache=tmp_path / "cache2", base=tiny["base"])
    manifest["format_version"] = dm.FORMAT_VERSION + 1
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="newer than this camtl reads"):
        dm.ensure_default_model(broken, cache=tmp_path / "cache2", base=tiny["base"])
    assert not (tmp_path / "cache2").exists() or not list((tmp_path / "cache2").glob("default-model-*"))


def test_a_manifest_whose_delta_lacks_a_tensor_is_refused(tiny, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny["shipped"], broken)
    tensors = load_file(str(broken / "delta.safetensors"))
    dropped = min(tensors)
    del tensors[dropped]
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["delta_sha256"] = dm.save_delta(tensors, broken)[0]["sha256"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"lacks tensors its manifest lists: \['{dropped}'\]"):
        dm.ensure_default_model(broken, cache=tmp_path / "cache", base=tiny["base"])


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


def converged_results(path: Path) -> Path:
    """A results file as benchmarks/converged.py writes one (protocol, summary), for the tiny model's three tasks."""

    def arm(seeds, sst2, average, serve):
        return {
            "lr": {"null": 1e-4},
            "seeds": seeds,
            "parameters_to_serve_all": serve,
            "tasks": {
                "sst2": {"mean": sst2, "std": 0.01},
                "rte": {"mean": 0.6, "std": 0.02},
                "stsb": {"mean": 0.8, "std": 0.0},
            },
            "average": {"mean": average, "std": 0.004},
        }

    path.write_text(
        json.dumps(
            {
                "protocol": {"multi_task_steps": 2419, "global_batch": 32, "evaluated": "last weights, full dev sets"},
                "summary": [
                    ["recipe", arm([42, 43, 44], 0.71, 0.702, 23_045_129)],
                    ["single-task", arm([42, 43], 0.69, 0.695, 113_611_465)],
                ],
            }
        )
    )
    return path


def test_the_card_compares_the_shipped_model_with_its_recipe_and_single_task(tiny, capsys):
    root, base = tiny["root"], tiny["base"]
    bench = converged_results(root / "converged.json")
    first, second = (trained_folder(root, base, upper=True, average=a, seed=s) for a, s in ((0.70, 5), (0.71, 6)))
    out = root / "compared"
    assert (
        dm.main(
            [
                "export",
                str(first),
                str(second),
                "--out",
                str(out),
                "--base",
                base,
                "--benchmark",
                str(bench),
                "--arm",
                "recipe",
            ]
        )
        == 0
    )
    shipped = json.loads((out / "results.json").read_text())["comparison"]
    assert [row["arm"] for row in shipped["rows"]] == ["recipe", "single-task"]
    card = (out / "README.md").read_text()
    section = card.split("## How it compares")[1].split("\n## ")[0]
    assert "2,419 optimizer steps of 32" in section and "its seed 48, the best of 2 seeds" in section
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0] == "| | seeds | sst2 | rte | stsb | average | parameters to serve these tasks |"
    assert lines[2].startswith("| **this checkpoint** | 1 | 0.710 | 0.600 | 0.795 | **0.710** |")
    assert (
        lines[3] == "| its recipe, `recipe` | 3 | 0.710 ± 0.010 | 0.600 ± 0.020 | 0.800 | 0.702 ± 0.004 | 23,045,129 |"
    )
    assert lines[4].startswith("| single-task fine-tuning (one MiniLM per task) | 2 | 0.690 ± 0.010 |")
    assert lines[5].startswith("| majority class") and len(lines) == 6
    capsys.readouterr()
    assert (
        dm.main(
            ["export", str(first), "--out", str(out), "--base", base, "--benchmark", str(bench), "--arm", "camtl-unc"]
        )
        == 2
    )
    assert "has no arm ['camtl-unc']; its arms: ['recipe', 'single-task']" in capsys.readouterr().err
    assert dm.main(["export", str(first), "--out", str(out), "--base", base, "--benchmark", str(bench)]) == 2
    assert "--benchmark and --arm go together" in capsys.readouterr().err
    assert "comparison" in json.loads((out / "results.json").read_text())  # a refused export left the folder as is


def test_the_committed_converged_results_compare_the_shipped_recipe():
    comparison = dm.benchmark_comparison(ROOT / "benchmarks/results/converged.json", "camtl-unc-prop-unfrozen")
    recipe, single = comparison["rows"]
    assert comparison["source"] == "benchmarks/results/converged.json" and len(single["seeds"]) >= 2
    assert set(recipe["tasks"]) == set(single["tasks"]) == {"cola", "sst2", "mrpc", "stsb", "rte"}
    fixed = dm.benchmark_comparison(
        ROOT / "benchmarks/results/converged.json", "camtl-unc-prop-unfrozen", ["single-task @ 0.0001"]
    )["rows"][1]
    assert fixed["name"] == ("single-task fine-tuning (one MiniLM per task), learning rate 0.0001 for every task")


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


def test_minilm_delta_sizes_of_the_training_modes(tmp_path):
    """The real base: the adapters mode ships under 1 MB, the paper's mode (upper three layers trained) about 12 MB,
    the whole encoder trained (configs/glue.yaml) about 22 MB, which ships as two shards under the 16 MB limit."""
    base = dm.bundled_base()
    sizes, deltas = {}, {}
    for layers in (0, 3, 6):
        model = CaMtlForMultiTask.from_bert(base, tasks=TASKS)
        changed = [n for n in model.state_dict() if "camtl_" in n or n.startswith("heads.")]
        changed += [
            n
            for n in model.state_dict()
            if "camtl_" not in n
            and n.startswith(
                tuple(f"bert.encoder.layer.{i}." for i in range(6 - layers, 6)) + (("bert.pooler.",) if layers else ())
            )
        ]
        perturb(model, changed)
        deltas[layers] = dm.compute_delta(model, base)
        sizes[layers] = dm.delta_bytes(deltas[layers])
    assert sizes[0] < 2**20 and 10 * 2**20 < sizes[3] < 14 * 2**20 and 20 * 2**20 < sizes[6] < 24 * 2**20, sizes
    files = dm.save_delta(deltas[6]["tensors"], tmp_path)
    assert [f["name"] for f in files] == ["delta-00001-of-00002.safetensors", "delta-00002-of-00002.safetensors"]
    assert all((tmp_path / f["name"]).stat().st_size <= dm.MAX_FILE_BYTES for f in files)


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
