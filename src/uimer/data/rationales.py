"""Rationale sources: which words of an example a human would point at to justify its label.

The paper's rationales for SNIPS are rules, not annotations:

* intent classification uses a keyword list per intent (digest §2.1, `SNIPS_INTENT_KEYWORDS`);
* slot filling uses 28 regular expressions (digest §2.2, `SNIPS_SLOT_REGEXES`).

Both are reproduced here with the reference's exact semantics, and users can supply their own in a YAML
file (`load_rationale_file`)::

    keywords:            # optional; label name -> words marked when that label is the GOLD label
      GetWeather: [weather, forecast]
    regexes:             # optional; label-independent, applied in order with re.match
      - '.*(?P<rationale>weather|forecast).*'

Every source has the same interface, `.mark(words, label_name) -> list[int]`, a 0/1 flag per word.
Mapping words to word pieces is done elsewhere (`uimer.data.encoding`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import yaml

from uimer.data.textio import read_text
from uimer.errors import DataError

# Digest §2.1 (`SNIPS_CLASS_2_RATIONALE_V1`), in the reference's order. Looked up by intent NAME.
SNIPS_INTENT_KEYWORDS: dict[str, list[str]] = {
    "AddToPlaylist": ["add", "playlist", "album", "list"],
    "BookRestaurant": ["book", "restaurant", "reservation", "reservations"],
    "GetWeather": ["weather", "forecast", "warm", "freezing", "hot", "cold"],
    "PlayMusic": ["play", "music", "song", "hear"],
    "RateBook": ["rate", "give", "star", "stars", "points", "rating", "book"],
    "SearchCreativeWork": ["find", "show", "called"],
    "SearchScreeningEvent": ["movie", "movies", "find", "theatres", "cinema", "cinemas", "film", "films", "show"],
}

# Digest §2.2 (`REStr.re`), applied in this order. Patterns are verbatim, including their duplicated
# alternatives (e.g. "movie schedules" and "saga" twice in #6), except #28 (see REGEX_28_REFERENCE).
SNIPS_SLOT_REGEXES: list[str] = [
    r".*(?P<rationale>find|looking for|show|download|get) (?P<rationale1>me) (?P<rationale2>a|the).*(called).*",
    r".*(?P<none>[0-5]|zero|one|two|three|four|five) (?P<rationale>points|stars).*",
    r".*(?P<rationale>a rating of) (?P<none>[0-5]|zero|one|two|three|four|five).*",
    r".*(?P<rationale>rate|give) .*(?P<rationale1>out of).*",
    r".*(?P<none>[0-5]|zero|one|two|three|four|five) (?P<rationale>out of) (?P<none1>6|six).*",
    r".*(this|current)? (?P<rationale>book|novel|movie schedule|movie schedules|album|movie schedules|movie times|essay"
    r"|textbook|tv show|saga|trailer|photograph|picture|television show|game|painting|tv series|soundtrack|song|movie"
    r"|saga|series|chronicle).*",
    r".*(?P<rationale>add) .*(?P<rationale1>to).*",
    r".*(?P<rationale>add|put) .*(?P<rationale1>to my) (?P<rationale2>playlist)?.*",
    r".*(?P<rationale>play playlist).*",
    r".*(?P<rationale>my) .*(?P<rationale1>playlist).*",
    r".*(?P<rationale>song|album|track|tune|artist|soundtrack) (?P<rationale1>by)?.*",
    r".*(?P<rationale>weather|sunny|forecasted|forecast) .*(?P<rationale1>in).*",
    r".*(?P<rationale>what is the weather).*",
    r".*(?P<rationale>weather|weather forecast).*",
    r".*(?P<rationale>book) (?P<none>a).*",
    r".*(?P<rationale>restaurant|bar|brasserie|pub|taverna|food truck|cafeteria).*",
    r".*(?P<rationale>nearest|closest|nearby|close by|in the neighborhood|in the area).*",
    r".*(?P<rationale>table|seats|reservation|restaurant|spot) .*(?P<rationale1>for) .*(?P<rationale2>people)?.*",
    r".*(?P<rationale>movie house|cinema|movie theatre).*",
    r".*(?P<rationale>when is|what time is|find me|where is|is|see|watch).* (?P<rationale1>playing|showing).*",
    r".*(?P<rationale>netflix|itunes|groove shark|google music|deezer|spotify|zvooq|youtube|lastfm|pandora|slacker"
    r"|iheart|vimeo|last fm).*",
    r".*(?P<rationale>animated movies|films|film).*",
    r".*(?P<rationale>twenties|fourties|eighties|thirties|sixties|fifties|seventies|nineties|1958|2011|2003|2016)",
    r".*(?P<rationale>for|at) (?P<rationale1>entertainment|theatres|corporation|cinemas).*",
    r".*(?P<rationale>highly rated|best|popular|top-rated|top).*",
    r".*(?P<rationale>colder|chilly|warm|hot|freezing|hotter|cold|warmer).*",
    r".*(?P<rationale>blizzard|rain|cloudy|windy|hail|snowstorm|stormy).*",
    # #28, FIXED: a raw string, so `\b` is a real word boundary and "here" can match. The reference wrote
    # this pattern as a non-raw string, where "\b" is the backspace character U+0008, so its "here"
    # alternative never matched (digest §2.2, bug 17). REGEX_28_REFERENCE keeps that behaviour.
    r".*(?P<rationale>\bhere|current position|current location|current place|current spot).*",
]

REGEX_28_INDEX = 27  # 0-based position of pattern #28 in SNIPS_SLOT_REGEXES
# Pattern #28 exactly as the reference compiled it: a literal backspace (U+0008) before "here", never matched.
REGEX_28_REFERENCE = ".*(?P<rationale>\x08here|current position|current location|current place|current spot).*"
SNIPS_SLOT_REGEXES_REFERENCE: list[str] = SNIPS_SLOT_REGEXES[:REGEX_28_INDEX] + [REGEX_28_REFERENCE]
"""The 28 patterns with the reference's behaviour for #28 (use to reproduce its coverage numbers)."""


@runtime_checkable
class RationaleSource(Protocol):
    """Anything that can mark rationale words of one sentence."""

    def mark(self, words: Sequence[str], label_name: str | None) -> list[int]:
        """Return a 0/1 flag per word; `label_name` is the gold label (ignored by label-free sources)."""
        ...


def _flags(words: Sequence[str], chosen: set[str] | frozenset[str]) -> list[int]:
    return [1 if w in chosen else 0 for w in words]


class KeywordRationales:
    """Gold-label keyword lists (digest §2.1): every occurrence of a listed word is a rationale.

    Matching is exact and case-sensitive on whole words. Only the gold label's list is used, so the rationale
    depends on the label; a label absent from the mapping (e.g. SNIPS's UNK) gets no rationale.
    """

    def __init__(self, mapping: Mapping[str, Iterable[str]]):
        self.mapping: dict[str, frozenset[str]] = {str(k): frozenset(map(str, v)) for k, v in mapping.items()}

    def mark(self, words: Sequence[str], label_name: str | None) -> list[int]:
        if label_name is None:
            return [0] * len(words)
        return _flags(words, self.mapping.get(label_name, frozenset()))

    def __repr__(self) -> str:
        return f"KeywordRationales({len(self.mapping)} labels)"


class RegexRationales:
    """Label-free regular expressions (digest §2.2), with the reference's exact semantics.

    Each pattern is applied with `re.match` to `' '.join(words)`. For every pattern that matches, the text of
    each named group whose name contains "rationale" is split on spaces into a set of words. Afterwards every
    word position whose word is in that set is a rationale, so all occurrences of e.g. "to" are marked, not just
    the matched span. Unnamed groups and groups such as `none` are context only.
    """

    def __init__(self, patterns: Iterable[str | re.Pattern[str]]):
        self.patterns: list[re.Pattern[str]] = [p if isinstance(p, re.Pattern) else re.compile(p) for p in patterns]
        self._groups = [[g for g in p.groupindex if "rationale" in g] for p in self.patterns]

    def matched_words(self, words: Sequence[str]) -> set[str]:
        """The set of words captured by `rationale*` groups of all matching patterns."""
        sentence = " ".join(words)
        chosen: set[str] = set()
        for pattern, groups in zip(self.patterns, self._groups, strict=True):
            m = pattern.match(sentence)
            if m is None:
                continue
            for g in groups:
                text = m.group(g)
                if text:
                    chosen.update(text.split(" "))
        return chosen

    def mark(self, words: Sequence[str], label_name: str | None = None) -> list[int]:
        return _flags(words, self.matched_words(words))

    def __repr__(self) -> str:
        return f"RegexRationales({len(self.patterns)} patterns)"


class CombinedRationales:
    """Union of several sources: a word is a rationale if any source marks it."""

    def __init__(self, sources: Iterable[RationaleSource]):
        self.sources = list(sources)

    def mark(self, words: Sequence[str], label_name: str | None) -> list[int]:
        out = [0] * len(words)
        for source in self.sources:
            out = [a | b for a, b in zip(out, source.mark(words, label_name), strict=True)]
        return out

    def __repr__(self) -> str:
        return f"CombinedRationales({self.sources!r})"


def snips_intent_rationales() -> KeywordRationales:
    """The paper's intent keyword dictionary."""
    return KeywordRationales(SNIPS_INTENT_KEYWORDS)


def snips_slot_rationales(*, reference_regex28: bool = False) -> RegexRationales:
    """The paper's 28 slot regexes; `reference_regex28=True` keeps the reference's never-matching #28."""
    return RegexRationales(SNIPS_SLOT_REGEXES_REFERENCE if reference_regex28 else SNIPS_SLOT_REGEXES)


def mark_example_words(
    source: RationaleSource, words: Sequence[str], pair_words: Sequence[str] | None, label_name: str | None
) -> list[int]:
    """Mark a (possibly paired) example; premise and hypothesis are marked separately, then concatenated.

    Marking the two sentences separately keeps a regex from matching across the sentence boundary.
    """
    flags = source.mark(list(words), label_name)
    if pair_words is not None:
        flags = flags + source.mark(list(pair_words), label_name)
    return flags


# ---------------------------------------------------------------------------------------------------------
# User rationale files (YAML)


def _node_line(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def _mapping_get(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def load_rationale_file(path: Path) -> RationaleSource:
    """Load a user rationale file (YAML with `keywords:` and/or `regexes:`, see the module docstring).

    Keywords are matched like the SNIPS intent dictionary (gold label's list, exact word match); regexes like
    the SNIPS slot patterns (named groups containing "rationale" pick the words). When both are given the
    union is marked. Errors (DataError naming the file and line): invalid YAML, wrong structure, a regex
    that does not compile (field `regexes[i]`), a file with neither key.
    """
    path = Path(path)
    text = read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(path, f"invalid YAML: {problem}", line=line) from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise DataError(path, "expected a mapping with 'keywords' and/or 'regexes'", line=_node_line(root))
    unknown = sorted(str(k) for k in data if k not in ("keywords", "regexes"))
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown}; expected 'keywords' and/or 'regexes'", field=unknown[0])
    if "keywords" not in data and "regexes" not in data:
        raise DataError(path, "no 'keywords' or 'regexes' given")

    sources: list[RationaleSource] = []
    if "keywords" in data:
        kv = _mapping_get(root, "keywords")
        knode = kv[1] if kv else None
        kw = data["keywords"]
        if not isinstance(kw, dict):
            raise DataError(path, "'keywords' must map a label name to a list of words", _node_line(knode), "keywords")
        mapping: dict[str, list[str]] = {}
        for label, words in kw.items():
            entry = _mapping_get(knode, str(label)) if isinstance(knode, yaml.MappingNode) else None
            line = _node_line(entry[1]) if entry else _node_line(knode)
            if isinstance(words, str):
                words = words.split()
            if not isinstance(words, list) or not all(isinstance(w, str | int | float) for w in words):
                raise DataError(path, "expected a list of words", line, f"keywords.{label}")
            mapping[str(label)] = [str(w) for w in words]
        sources.append(KeywordRationales(mapping))
    if "regexes" in data:
        rv = _mapping_get(root, "regexes")
        rnode = rv[1] if rv else None
        patterns = data["regexes"]
        if not isinstance(patterns, list):
            raise DataError(path, "'regexes' must be a list of patterns", _node_line(rnode), "regexes")
        items = rnode.value if isinstance(rnode, yaml.SequenceNode) else [None] * len(patterns)
        compiled: list[re.Pattern[str]] = []
        for i, (pattern, node) in enumerate(zip(patterns, items, strict=True)):
            line = _node_line(node)
            if not isinstance(pattern, str):
                raise DataError(path, f"pattern #{i + 1} must be a string", line, f"regexes[{i}]")
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise DataError(
                    path, f"pattern #{i + 1} {pattern!r} does not compile: {exc}", line, f"regexes[{i}]"
                ) from None
        if compiled and not any("rationale" in g for p in compiled for g in p.groupindex):
            raise DataError(
                path,
                "no pattern has a named group containing 'rationale' (e.g. (?P<rationale>...)), so nothing "
                "would be marked",
                _node_line(rnode),
                "regexes",
            )
        sources.append(RegexRationales(compiled))
    return sources[0] if len(sources) == 1 else CombinedRationales(sources)
