"""The character cut before tokenization: what the model reads is unchanged, only the work is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twostage.server.runtime.tokenizer import CHARS_PER_TOKEN, TextTokenizer, cut


@pytest.fixture(scope="module")
def tokenizer(embedder_bundle: Path) -> TextTokenizer:
    return TextTokenizer.from_file(embedder_bundle / "tokenizer.json", max_length=256)


def uncut(tokenizer: TextTokenizer, texts: list[str]) -> list[list[int]]:
    tok = tokenizer._tok
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]


def long_texts(passages: list[str]) -> list[str]:
    prose = " ".join(passages[:200])  # ~250k characters of English
    urls = " ".join(f"https://example.org/{'x' * 90}{i}" for i in range(3000))  # ~1 token each
    digits = "".join(str(i) for i in range(40_000))  # no whitespace at all
    return [prose, prose[:1000], urls, digits, "", "short query"]


def test_cut_texts_tokenize_exactly_as_uncut(tokenizer, scifact_passages) -> None:
    texts = long_texts(scifact_passages)
    assert len(texts[0]) > 10 * tokenizer.char_budget and tokenizer.char_budget == 256 * 16
    got = [e.ids.tolist() for e in tokenizer.encode(texts)]
    assert got == uncut(tokenizer, texts)
    assert [len(g) for g in got[:4]] == [256, len(uncut(tokenizer, [texts[1]])[0]), 256, 3]


def test_cut_pairs_tokenize_as_uncut(tokenizer, scifact_passages) -> None:
    """Pairs of sides up to a few windows long (uncut pairs cost memory quadratic in length, so
    the reference cannot go further) give exactly the tokens of the uncut pair."""
    prose = " ".join(scifact_passages[:20])[:6000]
    docs = [prose, prose[:1500], prose[:700], *scifact_passages[20:80]]
    urls = " ".join(f"https://example.org/{'x' * 30}/{i}" for i in range(100))
    queries = ["what causes disease", prose[:1200], urls]
    pairs = [(q, d) for q in queries for d in docs] + [(urls, urls), (prose, urls)]
    got = tokenizer.encode_pairs(pairs)
    want = tokenizer._tok.encode_batch(pairs, add_special_tokens=True)
    both_long = 0
    for (a, b), g, w in zip(pairs, got, want, strict=True):
        if min(len(tokenizer.encode([a])[0]), len(tokenizer.encode([b])[0])) < 256:
            assert g.ids.tolist() == w.ids
            continue
        # Both sides over a window: the tokenizer halves the window and gives the odd token to
        # the side that was longer before truncation, which the cut no longer knows.
        both_long += 1
        first = int(np.sum(g.type_ids == 0))
        assert len(g) == len(w.ids) == 256 and abs(first - w.type_ids.count(0)) <= 1
    assert 0 < both_long < len(pairs) // 2
    assert sum(len(g) == 256 for g in got) > len(pairs) // 3


def test_a_pair_of_huge_sides_stays_small(tokenizer) -> None:
    """The largest legal Rerank documents (100,000 characters) do not reach the tokenizer."""
    huge = "a." * 50_000
    seen: list[int] = []
    real = tokenizer._tok

    class Spy:
        def encode_batch(self, inputs, add_special_tokens=True):
            for x in inputs:
                seen.append(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]))
            return real.encode_batch(inputs, add_special_tokens=add_special_tokens)

    tokenizer._tok = Spy()
    try:
        out = tokenizer.encode_pairs([(huge, huge)] * 4)
    finally:
        tokenizer._tok = real
    assert max(seen) <= 2 * tokenizer.char_budget and all(len(o) == 256 for o in out)


def test_cut_keeps_whole_words() -> None:
    text = "word " * 1000
    assert cut(text, 103) == "word " * 19 + "word"
    assert cut("x" * 500, 100) == "x" * 100  # no whitespace: a hard cut
    assert cut("short", 100) == "short"
    assert CHARS_PER_TOKEN >= 8


def test_a_huge_text_costs_what_the_window_costs(tokenizer) -> None:
    """The tokenizer sees at most the budget: counted in characters, not timed."""
    seen: list[int] = []
    real = tokenizer._tok

    class Spy:
        def encode_batch(self, inputs, add_special_tokens=True):
            seen.extend(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
            return real.encode_batch(inputs, add_special_tokens=add_special_tokens)

    tokenizer._tok = Spy()
    try:
        out = tokenizer.encode(["retrieval " * 10_000] * 4)
    finally:
        tokenizer._tok = real
    assert max(seen) <= tokenizer.char_budget and len(seen) == 4
    assert all(np.array_equal(out[0].ids, o.ids) for o in out)
