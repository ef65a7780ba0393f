"""Smoke test of benchmarks/monitoring.py: on the tiny checkpoint and real rows, a few windows of each kind of
scenario land in the results file, a second run resumes (adds nothing), and the table and the plot are written. No
detection rate is asserted: the tiny model is untrained; the benchmark's figures are the default model's."""

import json

from benchmarks import monitoring as bench
from tests.camtl_fixtures import tiny_checkpoint

SCENARIOS = ["no_shift", "cr", "sick_as_rte", "label_shift", "mix"]


def test_scenarios_land_resume_and_make_the_table_and_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "FEATURES", tmp_path / "features")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "monitoring.json")
    monkeypatch.setattr(bench, "PLOT", tmp_path / "power.png")
    monkeypatch.setattr(bench, "SAMPLE", 260)  # AG News rows: 250 in a window of 500 at 50%
    monkeypatch.setattr(bench, "TRAIN_ROWS", 40)
    tasks = ("sst2", "stsb", "rte")
    results = bench.run(SCENARIOS, windows=3, shift_windows=4, model=tiny_checkpoint(), tasks=tasks)
    keys = [r["key"] for r in results["records"]]
    assert keys == [key for key, *_ in bench.plan(SCENARIOS, 3, tasks)]
    assert {r["scenario"] for r in results["records"]} == set(SCENARIOS)
    for r in results["records"]:
        assert 0 <= r["alarm_rate"] <= r["warn_or_alarm_rate"] <= 1 and set(r["signal_rates"]) == set(bench.M.SIGNALS)
    rte = next(r for r in results["records"] if r["key"] == ["no_shift", "rte", 200])
    assert rte["window"] == 138 and rte["reference_rows"] == 139 and rte["windows"] == 3
    cr = next(r for r in results["records"] if r["scenario"] == "cr")
    assert cr["windows"] == 4 and 0 <= cr["real_accuracy"] <= 1 and cr["whole_set"]["rows"] == 2000
    assert 0 <= next(r for r in results["records"] if r["scenario"] == "sick_as_rte")["real_accuracy"] <= 1
    again = bench.run(SCENARIOS, windows=3, shift_windows=4, model=tiny_checkpoint(), tasks=tasks)
    assert json.loads((tmp_path / "monitoring.json").read_text()) == again and len(again["records"]) == len(keys)
    table = (tmp_path / "monitoring.md").read_text()
    assert "## No shift" in table and "## SST-2 with AG News mixed in" in table and "| 50% |" in table
    assert (tmp_path / "power.png").stat().st_size > 10_000
