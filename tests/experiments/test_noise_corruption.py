"""The corruption functions of the noise study: pure and seeded, level 0 is the identity, level 1 changes every
unit, the level is checked, and the number of changed units is round(level · units)."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from mft_engine.data import TaskData, get_task
from mft_engine.errors import ConfigError
from mft_engine.experiments.noise import (
    CORRUPTIONS,
    EMOJIS,
    NEUTRAL_WORDS,
    corrupt,
    corrupt_data,
    delete_chars,
    delete_words,
    insert_emoji,
    substitute_chars,
    substitute_words,
    swap_words,
    units_changed,
)

TEXT = "The acting was Great but the plot felt thin and slow"
WORDS = TEXT.split()
LETTERS = sum(c.isalpha() for c in TEXT)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_deterministic_and_seeded(kind):
    f = CORRUPTIONS[kind]
    assert f(TEXT, 0.3, 7) == f(TEXT, 0.3, 7)
    assert f(TEXT, 0.3, "run:1") == f(TEXT, 0.3, "run:1")
    assert len({f(TEXT, 0.5, s) for s in range(8)}) > 1  # the seed matters
    assert f(TEXT, 0.3, 7) != TEXT


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_level_zero_is_identity(kind):
    odd = "  spaced   out\ttext  "
    assert CORRUPTIONS[kind](TEXT, 0.0, 3) == TEXT
    assert CORRUPTIONS[kind](odd, 0.0, 3) == odd  # not even whitespace is normalised
    assert CORRUPTIONS[kind]("", 0.7, 3) == ""


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("level", [-0.01, 1.01, math.nan, math.inf])
def test_level_outside_bounds(kind, level):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]"):
        CORRUPTIONS[kind](TEXT, level, 0)


def test_units_changed_rounds_half_up():
    assert units_changed(0.5, 3) == 2 and units_changed(0.25, 2) == 1 and units_changed(0.1, 4) == 0
    assert units_changed(1.0, 11) == 11 and units_changed(0.0, 11) == 0


def test_emoji_insertion():
    out = insert_emoji(TEXT, 0.5, 1).split()
    emojis = [w for w in out if w in EMOJIS]
    assert len(emojis) == units_changed(0.5, len(WORDS)) == 6  # 11 words, half rounded up
    assert [w for w in out if w not in EMOJIS] == WORDS
    full = insert_emoji(TEXT, 1.0, 1).split()
    assert all(full[2 * i] == w and full[2 * i + 1] in EMOJIS for i, w in enumerate(WORDS))


def test_character_substitution():
    out = substitute_chars(TEXT, 1.0, 2)
    assert len(out) == len(TEXT)
    for a, b in zip(TEXT, out):
        if a.isalpha():
            assert a != b and a.isupper() == b.isupper()
        else:
            assert a == b
    half = substitute_chars(TEXT, 0.5, 2)
    assert sum(a != b for a, b in zip(TEXT, half)) == units_changed(0.5, LETTERS)


def test_character_deletion():
    out = delete_chars(TEXT, 0.3, 4)
    assert len(out) == len(TEXT) - units_changed(0.3, LETTERS)
    assert out.count(" ") == TEXT.count(" ")  # only letters go
    assert delete_chars(TEXT, 1.0, 4) == " " * TEXT.count(" ")


def test_word_deletion():
    out = delete_words(TEXT, 0.5, 5).split()
    assert len(out) == len(WORDS) - units_changed(0.5, len(WORDS))
    it = iter(WORDS)
    assert all(w in it for w in out)  # the kept words stay in order
    assert delete_words(TEXT, 1.0, 5) == ""


def test_word_substitution():
    out = substitute_words(TEXT, 1.0, 6).split()
    assert len(out) == len(WORDS)
    assert all(w in NEUTRAL_WORDS and w != o for w, o in zip(out, WORDS))
    part = substitute_words(TEXT, 0.4, 6, vocabulary=("zzz",)).split()
    assert part.count("zzz") == units_changed(0.4, len(WORDS))


def test_word_swap():
    out = swap_words(TEXT, 0.3, 8).split()
    assert Counter(out) == Counter(WORDS) and out != WORDS
    assert swap_words("single", 1.0, 8) == "single"


def test_mixed_and_unknown_kind():
    assert corrupt(TEXT, "mixed", 0.4, 9) == corrupt(TEXT, "mixed", 0.4, 9)
    picks = {corrupt(TEXT, "mixed", 0.4, s, mixed_kinds=("word-del",)) for s in range(5)}
    assert all(len(p.split()) == len(WORDS) - units_changed(0.4, len(WORDS)) for p in picks)
    with pytest.raises(ConfigError, match="noise kind 'typo'"):
        corrupt(TEXT, "typo", 0.1)


def test_corrupt_data_changes_both_texts_of_a_pair_and_only_the_rows_asked():
    spec = get_task("mrpc")
    data = TaskData(spec, "validation", ["one two three four", "five six seven eight"],
                    ["a b c d", "e f g h"], [0, 1], "mem", [10, 11])
    out = corrupt_data(data, "word-del", 0.5, seed=3, rows=[1])
    assert out.texts[0] == data.texts[0] and out.text_pairs[0] == data.text_pairs[0]
    assert len(out.texts[1].split()) == 2 and len(out.text_pairs[1].split()) == 2
    assert out.labels == data.labels and out.row_ids == data.row_ids
    assert data.texts[1] == "five six seven eight"  # the input is not modified
    assert corrupt_data(data, "word-del", 0.5, seed=3).texts == corrupt_data(data, "word-del", 0.5, seed=3).texts
