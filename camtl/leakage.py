"""The leakage filter: no training row of any task may hold a sentence of a dev set that the run evaluates.

Why: several auxiliary sets were built from the same sources as GLUE's dev sets. SST was made from the review
snippets that MR holds (731 of SST-2's 872 dev sentences equal an MR line once normalised), SUBJ holds some of them
too, SICK shares sentences with STS-B, SNLI's captions touch STS-B's. Training on them would score a model on
sentences it was trained on.

The rule, on texts keyed by `camtl.readers.text_key` (lowercase, letters and digits only, no spaces: tokenised and
plain copies of a sentence agree), with lengths in words of `camtl.readers.normalize_text`, for every text of a
training row (both texts of a pair) against every text of every protected dev row:

=====================  ==================================================================================
equal                  the training text is the dev text                                   -> leak
contains               the dev text, of at least `MIN_WORDS` words, is inside the training text -> leak
most of                the training text, of at least `MIN_WORDS` words, is inside the dev text and at
                       least `MOST_OF` of its length (in characters)                       -> leak
=====================  ==================================================================================

Official splits are taken as given: a task's training rows are not matched against the dev sets of its own
collection's official split (`collection`: GLUE's train files against GLUE's dev files, SICK's train file against
SICK's test file, ...). RTE's train and dev sets share 226 premises and MRPC's and STS-B's share MSRpar sentences by
the benchmark's design; every published GLUE number, and every baseline of this project, trains on them. A split made
here (`camtl.readers.held_out_split`) has no such standing: its training rows are matched against everything.

A short phrase inside a dev sentence is no leak (an MPQA phrase such as "does not
work" says nothing about the review it occurs in); a dev review inside an MR line, or an MR line that is the review
with a word missing, is. A training row with a leaking text is dropped as a whole. The matching is Aho-Corasick
(``pyahocorasick``): one pass over the training texts for all the dev texts, one pass over the dev texts for all the
training texts, whatever their number.

The filter has no off switch: `camtl.build.get_dataloaders` runs it on every training set against the dev sets of
``data.tasks`` and of ``data.protected_tasks``, logs what it dropped and returns the counts (``results.json``:
``leakage``). Measured counts: BENCHMARKS.md ("Task scaling").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import ahocorasick

from .readers import normalize_text

#: Words a text needs before containment counts (equality always counts).
MIN_WORDS = 5
#: A training text inside a dev text leaks when it is at least this fraction of the dev text's length.
MOST_OF = 0.8


def collection(task) -> str | None:
    """The official distribution a task's train/dev split comes from (``"glue"``, ``"SICK"``, ``"SNLI"``, ...), or
    None for a split made here or a user's files (never exempt)."""
    from .tasks import BuiltinSource, GlueSource  # (camtl.tasks imports nothing of this module)

    source = getattr(task, "source", None)
    if isinstance(source, GlueSource):
        return "glue"
    if isinstance(source, BuiltinSource) and source.validation is not None:
        return source.file_for("train").split("/")[0] if source.reader != "snli" else "SNLI"
    return None


def _key_and_words(text: str) -> tuple[str, int]:
    """`camtl.readers.text_key` of a text and its length in words, from one normalisation."""
    norm = normalize_text(text)
    return norm.replace(" ", ""), norm.count(" ") + 1 if norm else 0


@dataclass
class LeakIndex:
    """The keys (`camtl.readers.text_key`) of the protected dev texts, searchable with Aho-Corasick.

    ``origins[i]`` names where dev text ``i`` came from (``"sst2"``); ``words[i]`` is its length in words. A query
    may leave some origins out (`leaks`' ``against``), so one index serves every training set."""

    keys: list[str]
    words: list[int]
    origins: list[str]
    _equal: dict[str, list[int]] = field(init=False, repr=False)
    _automaton: ahocorasick.Automaton | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._equal = {}
        automaton = ahocorasick.Automaton()
        for i, (key, words) in enumerate(zip(self.keys, self.words)):
            self._equal.setdefault(key, []).append(i)
            if words >= MIN_WORDS and key not in automaton:
                automaton.add_word(key, key)
        self._automaton = automaton if len(automaton) else None
        if self._automaton is not None:
            self._automaton.make_automaton()

    @classmethod
    def from_dev_sets(cls, dev_sets: Iterable[tuple[str, Sequence[str]]]) -> LeakIndex:
        """From ``(origin, raw texts)`` pairs (each dev set's ``text_a`` and ``text_b`` together)."""
        keys, words, origins = [], [], []
        for origin, raw in dev_sets:
            for text in raw:
                key, n = _key_and_words(text)
                if key:
                    keys.append(key)
                    words.append(n)
                    origins.append(origin)
        return cls(keys, words, origins)

    def _first(self, key: str, against: set[str] | None) -> int | None:
        """The first dev text with this key from an origin of ``against`` (None: any)."""
        return next((i for i in self._equal.get(key, ()) if against is None or self.origins[i] in against), None)

    def leaks(self, raw_texts: Sequence[str], against: set[str] | None = None) -> list[int | None]:
        """For each raw training text, the index of a dev text (from the origins ``against``, None: all) that it
        leaks by the module's rule, or None."""
        keyed = [_key_and_words(t) for t in raw_texts]
        found: list[int | None] = [self._first(key, against) if key else None for key, _ in keyed]
        if self._automaton is not None:  # a dev text of >= MIN_WORDS words inside a training text
            for k, (key, _) in enumerate(keyed):
                if found[k] is None and key:
                    found[k] = next(
                        (i for _, dev in self._automaton.iter(key) if (i := self._first(dev, against)) is not None),
                        None,
                    )
        # a training text of >= MIN_WORDS words that is most of a dev text: search the dev texts for training texts
        long_ones: dict[str, list[int]] = {}
        for k, (key, words) in enumerate(keyed):
            if found[k] is None and words >= MIN_WORDS:
                long_ones.setdefault(key, []).append(k)
        if long_ones:
            automaton = ahocorasick.Automaton()
            for key in long_ones:
                automaton.add_word(key, key)
            automaton.make_automaton()
            for i, dev in enumerate(self.keys):
                if against is not None and self.origins[i] not in against:
                    continue
                for _, key in automaton.iter(dev):
                    if len(key) >= MOST_OF * len(dev):
                        for k in long_ones[key]:
                            if found[k] is None:
                                found[k] = i
        return found


def leaking_rows(
    index: LeakIndex, text_a: Sequence[str], text_b: Sequence[str] | None = None, against: set[str] | None = None
) -> list[int | None]:
    """For each training row (one or two texts), the dev text it leaks, or None (a pair leaks if either text does)."""
    first = index.leaks(text_a, against)
    if not text_b or not any(text_b):
        return first
    second = index.leaks(text_b, against)
    return [a if a is not None else b for a, b in zip(first, second)]


def filter_training_set(index: LeakIndex, ds, against: set[str] | None = None):
    """``ds`` (columns ``text_a``, ``text_b``) without its leaking rows, and the count dropped per dev origin
    (``{"sst2": 737}``); ``against``: the dev origins it is matched against (None: all)."""
    columns = ds[:]  # plain lists (a datasets 5 Column reads one row at a time)
    found = leaking_rows(index, columns["text_a"], columns.get("text_b"), against)
    dropped: dict[str, int] = {}
    for i in found:
        if i is not None:
            dropped[index.origins[i]] = dropped.get(index.origins[i], 0) + 1
    if not dropped:
        return ds, dropped
    keep = [k for k, i in enumerate(found) if i is None]
    return ds.select(keep), dropped


def filter_leaks(train_sets: dict[str, object], dev_sets: dict[str, object], tasks: dict[str, object]):
    """Every training set of ``train_sets`` (``{task name: Dataset}``) without the rows that leak a dev set of
    ``dev_sets`` (``{task name: Dataset}``, the protected ones), official splits of the same `collection` exempt.

    Returns ``(filtered train sets, counts)`` with ``counts[task] = {"rows": n, "dropped": {dev task: k}}``."""
    dev_texts = {}
    for name, ds in dev_sets.items():
        columns = ds[:]  # plain lists
        dev_texts[name] = columns["text_a"] + [t for t in columns["text_b"] if t]
    index = LeakIndex.from_dev_sets(dev_texts.items())
    out, counts = {}, {}
    for name, ds in train_sets.items():
        mine = collection(tasks[name])
        against = {dev for dev in dev_sets if mine is None or collection(tasks[dev]) != mine}
        out[name], dropped = filter_training_set(index, ds, against)
        counts[name] = {"rows": len(ds), "dropped": dropped}
    return out, counts


__all__ = ["MIN_WORDS", "MOST_OF", "LeakIndex", "collection", "filter_leaks", "filter_training_set", "leaking_rows"]
