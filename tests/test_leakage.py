"""The leakage filter (camtl.leakage) on real rows: MR against SST-2 dev, SICK against STS-B dev, MPQA phrases."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from camtl.leakage import LeakIndex, filter_leaks, leaking_rows
from camtl.readers import normalize_text, read_labelled_lines, text_key
from camtl.tasks import get_task, load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTRA, GLUE = DATA / "extra", DATA / "glue"


def load(name: str, split: str) -> datasets.Dataset:
    return load_split(get_task(name), split, data_dir=GLUE, extra_dir=EXTRA)


def dev_texts(name: str) -> list[str]:
    ds = load(name, "validation")
    return list(ds["text_a"]) + [t for t in ds["text_b"] if t]


@pytest.fixture(scope="module")
def sst2_index() -> LeakIndex:
    return LeakIndex.from_dev_sets([("sst2", dev_texts("sst2"))])


def test_normalisation() -> None:
    assert normalize_text("  It's a  GREAT film -- really!\u2026 ") == "it s a great film really"
    assert normalize_text("Café  déjà-vu") == "café déjà vu"  # letters of any script are kept


def test_most_sst2_dev_sentences_are_mr_lines() -> None:
    """The issue's measurement: 731 of SST-2's 872 dev sentences equal an MR line once normalised."""
    mr = read_labelled_lines(str(EXTRA), [("MR/rt-polarity.neg", "n"), ("MR/rt-polarity.pos", "p")], "cp1252")
    lines = {text_key(t) for t in mr["text_a"]}
    dev = [text_key(t) for t in load("sst2", "validation")["text_a"]]
    assert sum(d in lines for d in dev) == 731
    spaced = {normalize_text(t) for t in mr["text_a"]}
    assert sum(normalize_text(d) in spaced for d in load("sst2", "validation")["text_a"]) == 680  # "does n't"


def test_mr_training_rows_leaking_sst2_dev_are_dropped(sst2_index: LeakIndex) -> None:
    train = load("mr", "train")
    clean, counts = filter_leaks(
        {"mr": train}, {"sst2": load("sst2", "validation")}, {"mr": get_task("mr"), "sst2": get_task("sst2")}
    )
    dropped = counts["mr"]["dropped"]["sst2"]
    assert counts["mr"]["rows"] == 9660 and len(clean["mr"]) == 9660 - dropped
    assert 700 < dropped < 760  # 9,660 of MR's 10,662 lines train; 731 lines equal a dev sentence, more contain one
    dev = set(text_key(t) for t in dev_texts("sst2"))
    assert not any(text_key(t) in dev for t in clean["mr"]["text_a"])  # no equal line left
    # what is left leaks nothing by any part of the rule
    assert all(i is None for i in leaking_rows(sst2_index, clean["mr"]["text_a"]))


def test_contains_and_most_of(sst2_index: LeakIndex) -> None:
    review = load("sst2", "validation")[0]["text_a"]  # "it 's a charming and often affecting journey . "
    words = normalize_text(review).split()
    assert len(words) >= 8
    longer = f"Critics said: {review} Indeed."
    most = " ".join(words[1:])  # the review without its first word: most of it
    half = " ".join(words[: len(words) // 2])
    phrase = " ".join(words[:3])
    found = sst2_index.leaks([review, longer, most, half, phrase, "an unrelated sentence about something else"])
    assert [f is not None for f in found] == [True, True, True, False, False, False]


def test_mpqa_three_word_phrase_is_no_leak(sst2_index: LeakIndex) -> None:
    """A short MPQA phrase inside an SST-2 dev review says nothing about the review: it stays."""
    dev = [normalize_text(t) for t in load("sst2", "validation")["text_a"]]
    phrases = [t for t in load("mpqa", "train")["text_a"] if len(normalize_text(t).split()) == 3]
    inside = [p for p in phrases if any(f" {normalize_text(p)} " in f" {d} " for d in dev)]  # on word boundaries
    assert inside, "some 3-word MPQA phrases occur inside SST-2 dev reviews"
    assert all(i is None for i in sst2_index.leaks(inside))


def test_sick_train_pairs_sharing_an_stsb_dev_sentence_are_dropped() -> None:
    """The issue counts 377 SICK train pairs that share a sentence with STS-B dev; equality plus containment drop
    a few more. SICK's official train/test split is not filtered against itself."""
    train = load("sick_e", "train")
    dev = load("stsb", "validation")
    stsb = {text_key(t) for t in list(dev["text_a"]) + list(dev["text_b"])}
    equal = sum(text_key(a) in stsb or text_key(b) in stsb for a, b in zip(train["text_a"], train["text_b"]))
    assert equal == 377
    tasks = {n: get_task(n) for n in ("sick_e", "stsb", "sick_r")}
    clean, counts = filter_leaks({"sick_e": train}, {"stsb": dev, "sick_r": load("sick_r", "validation")}, tasks)
    assert set(counts["sick_e"]["dropped"]) == {"stsb"}  # same collection (SICK's test file): exempt
    assert 377 <= counts["sick_e"]["dropped"]["stsb"] <= 377 + 30
    left = {text_key(t) for t in list(clean["sick_e"]["text_a"]) + list(clean["sick_e"]["text_b"])}
    assert not left & stsb


def test_glue_official_splits_are_not_filtered_against_glue_dev() -> None:
    """RTE's train and dev sets share premises by the benchmark's design: GLUE's train files stay whole."""
    tasks = {n: get_task(n) for n in ("rte", "snli")}
    rte_dev = load("rte", "validation")
    clean, counts = filter_leaks({"rte": load("rte", "train")}, {"rte": rte_dev}, tasks)
    assert counts["rte"] == {"rows": 2490, "dropped": {}} and len(clean["rte"]) == 2490
    index = LeakIndex.from_dev_sets([("rte", list(rte_dev["text_a"]) + list(rte_dev["text_b"]))])
    assert sum(i is not None for i in leaking_rows(index, clean["rte"]["text_a"], clean["rte"]["text_b"])) > 100
