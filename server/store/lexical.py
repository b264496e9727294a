"""The lexical (BM25) channel's text analysis, and the FTS5 match expression built from it.

BM25 itself is SQLite FTS5's (``bm25()``, k1 = 1.2, b = 0.75) over a table written in the same
transaction as the document rows (:mod:`documents`). FTS5 only splits what it is given: the
analysis happens here, once, the same way for documents and queries, so the index and the query
can never disagree on a term.

Analyzers (fixed per collection at creation, recorded in ``collection.json``):

- ``english`` (default): lowercase word tokens of two or more characters (``\\w\\w+``, Unicode),
  Lucene's 33 English stopwords removed, Snowball English stemming (PyStemmer). The same recipe
  as the bm25s reference figures (stopwords "en", Snowball stemmer).
- ``simple``: the same tokens, lowercased, no stopwords and no stemming (any language).
- ``none``: no lexical channel; the collection is searched by dense vectors only.

A query is matched as an OR of its analysed terms, each written as an FTS5 string literal, so
nothing a user types (quotes, ``AND``, ``NEAR``, ``*``, ``^``, ``:``, column names, parentheses)
is ever read as query syntax: terms are ``\\w`` runs, which contain no quote to escape.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ANALYZERS = ("english", "simple", "none")
DEFAULT_ANALYZER = "english"

# Lucene's EnglishAnalyzer stop set (also bm25s' "en" list).
_STOP = "a an and are as at be but by for if in into is it no not of on or such that the their"
ENGLISH_STOPWORDS = frozenset((_STOP + " then there these they this to was will with").split(" "))
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True)
class Analyzer:
    """Text -> index terms for one collection (see module doc)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {', '.join(ANALYZERS)}; got {self.name!r}")

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def terms(self, text: str) -> list[str]:
        """The index terms of ``text`` in order (repeats kept: they are term frequencies)."""
        if not self.enabled:
            return []
        tokens = _TOKEN.findall(text.lower())
        if self.name == "english":
            tokens = [t for t in tokens if t not in ENGLISH_STOPWORDS]
            return list(_stemmer().stemWords(tokens))
        return tokens

    def document(self, text: str) -> str:
        """What the FTS5 row holds: the terms joined by spaces."""
        return " ".join(self.terms(text))

    def documents(self, texts: Iterable[str]) -> list[str]:
        return [self.document(t) for t in texts]

    def match(self, query: str) -> str | None:
        """The FTS5 MATCH expression of ``query``: an OR of its distinct terms as string
        literals; ``None`` when the query has no term (every word a stopword, say)."""
        unique = list(dict.fromkeys(self.terms(query)))
        if not unique:
            return None
        return " OR ".join(_literal(t) for t in unique)


def _literal(term: str) -> str:
    # A term is a run of \w characters: no quote can occur, but escape anyway so the invariant
    # does not rest on the tokenizer alone.
    return '"' + term.replace('"', '""') + '"'


_LOCAL = threading.local()


def _stemmer():  # type: ignore[no-untyped-def]
    """PyStemmer's Snowball English stemmer (C), one per thread: its objects are not
    thread-safe, and searches analyse queries in worker threads."""
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        import Stemmer

        stemmer = _LOCAL.stemmer = Stemmer.Stemmer("english")
    return stemmer


def validate_analyzer(name: object) -> str:
    if not isinstance(name, str) or name not in ANALYZERS:
        raise ValueError(f"analyzer must be one of {', '.join(ANALYZERS)}; got {name!r}")
    return name


def analyzed(analyzer: Analyzer, texts: Sequence[str]) -> list[str]:
    """FTS5 rows for ``texts`` (empty strings where the analyzer is ``none``)."""
    return analyzer.documents(texts) if analyzer.enabled else ["" for _ in texts]
