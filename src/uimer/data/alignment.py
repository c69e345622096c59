"""Rationales on words or characters -> a float mask over word pieces, for any fast tokenizer.

`uimer.data.encoding` aligns its own word-level examples the same way; this module serves data that arrives
as Hugging Face features (a `BatchEncoding`, a `datasets` map): the rule is the tokenizer's own alignment,
so it holds for every fast tokenizer (WordPiece, BPE, SentencePiece):

- word flags: a piece is 1 when `word_ids()` maps it to a flagged word (every piece of the word);
- character spans `(start, end)` on the raw text: a piece is 1 when its `offset_mapping` range overlaps a
  span (so a span that cuts a word marks the pieces it touches, never a piece next to it);
- special ([CLS], [SEP], <s>) and padding positions are always 0, and so is everything truncated away.

Slow (Python) tokenizers have neither `word_ids` nor offsets: they are refused with a ConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence

from uimer.errors import ConfigError, DataError

Span = tuple[int, int]
RATIONALE_FIELD = "rationale_mask"


def _where(index: int) -> str:
    return f"example #{index + 1}"


def _check_flags(flags: Sequence, index: int, field: str) -> list[float]:
    values = []
    for value in flags:
        if isinstance(value, bool) or value in (0, 1):
            values.append(float(value))
        else:
            raise DataError(_where(index), f"rationale flags must be 0 or 1, got {value!r}", field=field)
    return values


def word_flags_to_pieces(
    word_ids: Sequence[int | None],
    flags: Sequence,
    *,
    sequence_ids: Sequence[int | None] | None = None,
    pair_flags: Sequence | None = None,
    index: int = 0,
    field: str = "rationale",
) -> list[float]:
    """(L,) 1.0 on every piece of a flagged word, 0.0 on other pieces and on special/padding positions.

    `word_ids` is a fast tokenizer's `encoding.word_ids(i)`. For a sentence pair give `sequence_ids` and the
    second sentence's flags as `pair_flags` (word ids restart at 0 in the second sentence). A word id past the
    end of its flags is a DataError naming `field` (the flags were made for other words)."""
    sides = [_check_flags(flags, index, field)]
    if pair_flags is not None:
        sides.append(_check_flags(pair_flags, index, f"pair_{field}"))
    mask = []
    for pos, word in enumerate(word_ids):
        side = 0 if sequence_ids is None else sequence_ids[pos]
        if word is None or side is None:
            mask.append(0.0)
            continue
        if side >= len(sides):
            raise DataError(_where(index), "the encoding is a sentence pair: give pair_flags for the second sentence",
                            field=f"pair_{field}")
        values = sides[side]
        if not 0 <= word < len(values):
            name = field if side == 0 else f"pair_{field}"
            raise DataError(_where(index), f"{len(values)} flags, but the text has at least {word + 1} words",
                            field=name)
        mask.append(values[word])
    return mask


def check_spans(spans: Sequence[Span], text_length: int, index: int = 0, field: str = "rationale_spans") -> list[Span]:
    """Spans as (start, end) pairs with 0 <= start < end <= len(text); anything else is a DataError naming `field`."""
    checked = []
    for span in spans:
        if not (isinstance(span, Sequence) and len(span) == 2 and all(isinstance(v, int) for v in span)):
            raise DataError(_where(index), f"a span is a (start, end) pair of ints, got {span!r}", field=field)
        start, end = span
        if not 0 <= start < end <= text_length:
            raise DataError(_where(index), f"span ({start}, {end}) is outside the text's {text_length} characters "
                            "or empty", field=field)
        checked.append((start, end))
    return checked


def spans_to_pieces(
    offsets: Sequence[Span],
    spans: Sequence[Span],
    *,
    special: Sequence[bool],
    sequence_ids: Sequence[int | None] | None = None,
    pair_spans: Sequence[Span] | None = None,
) -> list[float]:
    """(L,) 1.0 on every non-special piece whose character range overlaps a span of its own text.

    `offsets` is the encoding's `offset_mapping` (ranges in the piece's own text of a pair), `special` marks
    special and padding positions; spans must already be checked (`check_spans`)."""
    sides = [list(spans), list(pair_spans or [])]
    mask = []
    for pos, (start, end) in enumerate(offsets):
        side = 0 if sequence_ids is None else sequence_ids[pos]
        if special[pos] or side is None or end <= start:
            mask.append(0.0)
            continue
        hit = any(s < end and start < e for s, e in sides[side])
        mask.append(1.0 if hit else 0.0)
    return mask


def _require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"tokenizer: {type(tokenizer).__name__} is a slow tokenizer; aligning rationales to word "
                          "pieces needs a fast one (AutoTokenizer.from_pretrained(..., use_fast=True))")


def _lengths_match(values: Sequence | None, expected: Sequence | None, what: str, field: str) -> None:
    if values is None:
        return
    if expected is None or len(values) != len(expected):
        raise DataError("input", f"{len(values)} {field} entries for {len(expected or [])} {what}", field=field)


def encode_with_rationales(
    tokenizer,
    texts: Sequence,
    *,
    word_rationales: Sequence[Sequence] | None = None,
    spans: Sequence[Sequence[Span]] | None = None,
    pairs: Sequence | None = None,
    pair_word_rationales: Sequence[Sequence] | None = None,
    pair_spans: Sequence[Sequence[Span]] | None = None,
    **tokenizer_kwargs,
):
    """Tokenise a batch and add a `rationale_mask` column (one float list per example) to the encoding.

    `texts` (and `pairs`) are lists of words with `word_rationales` (`pair_word_rationales`), one 0/1 flag per
    word, or raw strings with character `spans` (`pair_spans`). Word flags need pre-split words, so that which
    word is which is never guessed from the text. Missing rationales give an all-zero mask. The encoding also gets `special_tokens_mask`, which the
    collator uses to tell real pieces from special ones. Extra keyword arguments go to the tokenizer
    (`truncation=True, max_length=128`, ...). Use it as `dataset.map(fn, batched=True)`'s body."""
    _require_fast(tokenizer)
    split = bool(texts) and not isinstance(texts[0], str)
    if split and (spans is not None or pair_spans is not None):
        raise ConfigError("spans: character spans refer to raw text; for pre-split words give word_rationales")
    if not split and (word_rationales is not None or pair_word_rationales is not None):
        raise ConfigError("word_rationales: word flags need pre-split words (lists of strings); for raw text give "
                          "character spans")
    _lengths_match(word_rationales or spans, texts, "texts", "word_rationales" if split else "spans")
    _lengths_match(pair_word_rationales or pair_spans, pairs, "pairs", "pair_word_rationales" if split else "pair_spans")
    kwargs = {"return_special_tokens_mask": True, **tokenizer_kwargs}
    if not split:
        kwargs["return_offsets_mapping"] = True
    args = (texts,) if pairs is None else (texts, pairs)
    encoding = tokenizer(*args, is_split_into_words=split, **kwargs)
    masks = []
    for i in range(len(texts)):
        sequence_ids = encoding.sequence_ids(i) if pairs is not None else None
        if split:
            flags = word_rationales[i] if word_rationales is not None else [0] * len(texts[i])
            pair_flags = None
            if pairs is not None:
                pair_flags = pair_word_rationales[i] if pair_word_rationales is not None else [0] * len(pairs[i])
                _check_word_count(pair_flags, pairs[i], i, "pair_word_rationales")
            _check_word_count(flags, texts[i], i, "word_rationales")
            masks.append(word_flags_to_pieces(encoding.word_ids(i), flags, sequence_ids=sequence_ids,
                                              pair_flags=pair_flags, index=i, field="word_rationales"))
        else:
            own = check_spans(spans[i] if spans is not None else [], len(texts[i]), i, "spans")
            other = None
            if pairs is not None:
                other = check_spans(pair_spans[i] if pair_spans is not None else [], len(pairs[i]), i, "pair_spans")
            special = [w is None for w in encoding.word_ids(i)]
            offsets = [tuple(int(v) for v in pair) for pair in encoding["offset_mapping"][i]]
            masks.append(spans_to_pieces(offsets, own, special=special,
                                         sequence_ids=sequence_ids, pair_spans=other))
    if tokenizer_kwargs.get("return_tensors") == "pt":  # padded to one length, as the other columns
        import torch

        encoding[RATIONALE_FIELD] = torch.tensor(masks, dtype=torch.float)
    else:
        encoding[RATIONALE_FIELD] = masks
    if not split and not tokenizer_kwargs.get("return_offsets_mapping"):
        del encoding["offset_mapping"]  # asked for here, not by the caller: the model's forward would refuse it
    return encoding


def _check_word_count(flags: Sequence, words: Sequence[str], index: int, field: str) -> None:
    if len(flags) != len(words):
        raise DataError(_where(index), f"{len(flags)} flags for {len(words)} words", field=field)
