"""The lexical (BM25, SQLite FTS5) channel of a collection, on real SciFact documents."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from twostage.server.errors import FailedPrecondition
from twostage.server.store.collections import CONFIG_FILE, CollectionManager
from twostage.server.store.lexical import Analyzer

N_DOCS = 600
DIM = 8


def _text(d: dict) -> str:
    return f"{d['title']} {d['text']}".strip()


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    # The lexical channel never reads them; any non-zero vectors do.
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32) + 3.0


@pytest.fixture()
def corpus(scifact_corpus):
    return scifact_corpus[:N_DOCS]


@pytest.fixture()
def manager(tmp_path):
    m = CollectionManager(tmp_path / "data")
    yield m
    m.close_all(snapshot=False)


def _fill(manager, corpus, name="sf", analyzer="english", metadata=None):
    c = manager.create(name, dim=DIM, index="exact", analyzer=analyzer)
    c.upsert(
        [d["_id"] for d in corpus],
        [_text(d) for d in corpus],
        metadata or [{"shard": str(i % 3)} for i in range(len(corpus))],
        _vectors(len(corpus)),
    )
    return c


def _rare_inflection(corpus, analyzer: Analyzer) -> tuple[str, str]:
    """A word form absent from the corpus slice whose stem occurs in exactly one document,
    and that document's id."""
    df: Counter[str] = Counter()
    surfaces: set[str] = set()
    for d in corpus:
        df.update(set(analyzer.terms(_text(d))))
        surfaces.update(w.lower() for w in _text(d).split())
    for d in corpus:
        for word in _text(d).split():
            word = word.strip(".,;:()[]'\"").lower()
            stems = analyzer.terms(word)
            if len(stems) != 1 or df[stems[0]] != 1 or not word.isalpha() or len(word) < 6:
                continue
            for variant in (word + "s", word + "ing", word[:-1] + "ing", word + "ed"):
                if variant not in surfaces and analyzer.terms(variant) == stems:
                    return variant, d["_id"]
    raise AssertionError("no rare inflectable word in the corpus slice")


def test_finds_a_document_by_a_rare_word_in_another_inflection(manager, corpus) -> None:
    c = _fill(manager, corpus)
    variant, doc_id = _rare_inflection(corpus, Analyzer("english"))
    hits = c.lexical_search(f"{variant.upper()}?", 5)
    assert [h.id for h in hits] == [doc_id] and hits[0].score > 0
    # without stemming the inflection is a different term
    plain = _fill(manager, corpus, name="plain", analyzer="simple")
    assert doc_id not in {h.id for h in plain.lexical_search(variant, 5)}


def test_analysis_is_the_same_at_index_and_query_time(manager, corpus) -> None:
    c = _fill(manager, corpus[:50])
    analyzer = Analyzer("english")
    conn = sqlite3.connect(c.folder / "documents.sqlite")
    try:
        label = conn.execute("SELECT label FROM documents WHERE id = ?", (corpus[7]["_id"],))
        rowid = label.fetchone()[0]
        stored = conn.execute("SELECT terms FROM lexical WHERE rowid = ?", (rowid,)).fetchone()[0]
    finally:
        conn.close()
    assert stored == " ".join(analyzer.terms(_text(corpus[7])))
    # A document's own title as the query ranks it first: the query went through the same path.
    hits = c.lexical_search(corpus[7]["title"], 3)
    assert hits[0].id == corpus[7]["_id"]
    assert Analyzer("english").terms("The Running runners RAN") == ["run", "runner", "ran"]
    assert Analyzer("simple").terms("The Running runners") == ["the", "running", "runners"]
    assert Analyzer("none").terms("anything") == []


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "cancer AND NOT tumour",
        "NEAR(cell death, 5)",
        "immun*",
        "^cell",
        "terms: cancer",
        "text:cells OR title:(mice",
        "((()",
        "-",
        '""',
        "col1 : col2 :",
    ],
)
def test_query_syntax_is_plain_text(manager, corpus, query) -> None:
    c = _fill(manager, corpus[:100])
    hits = c.lexical_search(query, 10)  # never an FTS5 syntax error
    plain = " ".join(Analyzer("english").terms(query))
    expected = c.lexical_search(plain, 10) if plain else []
    assert [h.id for h in hits] == [h.id for h in expected]


def test_a_stopword_only_query_returns_nothing(manager, corpus) -> None:
    c = _fill(manager, corpus[:50])
    assert c.lexical_search("the and of", 10) == []


def test_delete_and_replace_reach_the_lexical_channel(manager, corpus) -> None:
    c = _fill(manager, corpus[:100])
    target = corpus[10]
    assert c.lexical_search(target["title"], 1)[0].id == target["_id"]
    c.delete([target["_id"]])
    assert target["_id"] not in {h.id for h in c.lexical_search(target["title"], 100)}
    other = corpus[20]
    c.upsert([other["_id"]], ["zebrafish xylophone quokka"], None, _vectors(1))
    assert [h.id for h in c.lexical_search("quokkas", 5)] == [other["_id"]]
    assert other["_id"] not in {h.id for h in c.lexical_search(other["title"], 100)}


def test_filter_applies_to_the_lexical_channel(manager, corpus) -> None:
    c = _fill(manager, corpus[:300])
    hits = c.lexical_search("cell protein expression", 50, {"shard": "2"})
    assert hits and all(h.metadata["shard"] == "2" for h in hits)
    unfiltered = [h for h in c.lexical_search("cell protein expression", 300)]
    expected = [h.id for h in unfiltered if h.metadata["shard"] == "2"][:50]
    assert [h.id for h in hits] == expected


def test_scores_for_given_documents_match_the_search(manager, corpus) -> None:
    c = _fill(manager, corpus[:200])
    hits = c.lexical_search("vitamin D deficiency", 20)
    labels = [h.label for h in hits] + [999_999]
    scores = c.lexical_channel("vitamin D deficiency", 5).scores_of(labels)
    assert all(abs(scores[h.label] - h.score) < 1e-9 for h in hits)
    assert scores[999_999] == 0.0


def test_existing_collection_gets_its_lexical_index_on_open(tmp_path, corpus, caplog) -> None:
    data = tmp_path / "data"
    m = CollectionManager(data)
    c = _fill(m, corpus[:120])
    before = [h.id for h in c.lexical_search("gene expression", 10)]
    m.close_all()
    # Make it look like a collection from before the lexical channel: no table, no config key.
    db = sqlite3.connect(data / "collections" / "sf" / "documents.sqlite")
    db.execute("DROP TABLE lexical")
    db.execute("DELETE FROM state WHERE key = 'lexical_analyzer'")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    config_path = data / "collections" / "sf" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config.pop("analyzer")
    config.pop("tuning")
    config_path.write_text(json.dumps(config))
    caplog.set_level("INFO")
    m2 = CollectionManager(data)
    try:
        assert m2.open_all() == ["sf"]
        c2 = m2.get("sf")
        assert c2.config.analyzer == "english"
        assert [h.id for h in c2.lexical_search("gene expression", 10)] == before
        assert "building the lexical index" in caplog.text and "120/120" in caplog.text
    finally:
        m2.close_all()


def test_analyzer_none_has_no_lexical_channel(manager, corpus) -> None:
    c = _fill(manager, corpus[:20], analyzer="none")
    with pytest.raises(FailedPrecondition, match="no lexical channel"):
        c.lexical_search("cells", 5)
    assert c.describe()["analyzer"] == "none"


def test_bm25_matches_a_reference_formula(manager, corpus) -> None:
    """FTS5's bm25 (k1 1.2, b 0.75) over our analysed terms, recomputed by hand for one query."""
    docs = corpus[:150]
    c = _fill(manager, docs)
    analyzer = Analyzer("english")
    terms = [analyzer.terms(_text(d)) for d in docs]
    n = len(terms)
    avg = sum(len(t) for t in terms) / n
    query = list(dict.fromkeys(analyzer.terms("insulin resistance in obese patients")))
    expected = {}
    for d, t in zip(docs, terms, strict=True):
        counts = Counter(t)
        score = 0.0
        for q in query:
            df = sum(1 for other in terms if q in other)
            if not counts[q]:
                continue
            idf = max(np.log((n - df + 0.5) / (df + 0.5)), 1e-6)
            tf = counts[q]
            score += idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(t) / avg))
        if score:
            expected[d["_id"]] = score
    hits = c.lexical_search("insulin resistance in obese patients", 200)
    assert {h.id for h in hits} == set(expected)
    for h in hits:
        assert abs(h.score - expected[h.id]) < 1e-6 * max(1.0, expected[h.id]), h.id


def test_lexical_table_survives_reopen(tmp_path: Path, corpus) -> None:
    data = tmp_path / "data"
    m = CollectionManager(data)
    c = _fill(m, corpus[:80])
    before = [(h.id, round(h.score, 9)) for h in c.lexical_search("cancer cells", 10)]
    m.close_all(snapshot=False)
    m2 = CollectionManager(data)
    try:
        m2.open_all()
        after = [(h.id, round(h.score, 9)) for h in m2.get("sf").lexical_search("cancer cells", 10)]
        assert after == before and before
    finally:
        m2.close_all()
