"""Client commands of ``twostage``: ingest, search, embed, rerank, info, eval, load.

Every command takes ``--address`` (env ``TWOSTAGE_ADDRESS``, default 127.0.0.1:50051) and the
TLS / token options; commands that print results take ``--json``. grpc and numpy are imported in
the handlers, so ``twostage --help`` stays fast. Failures print one line and exit non-zero:
1 for an error from the server (or no server), 2 for bad input (file, flag).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twostage.clients.client import TwostageClient
    from twostage.clients.results import Document

DEFAULT_ADDRESS = "127.0.0.1:50051"
EXIT_SERVER_ERROR = 1
EXIT_BAD_INPUT = 2
Handler = Callable[[argparse.Namespace], int]


# --- shared plumbing -------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        help=f"server HOST:PORT (env TWOSTAGE_ADDRESS, default {DEFAULT_ADDRESS})",
    )
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per RPC (default 60)")
    g.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    g.add_argument("--root-certs", type=Path, help="PEM root certificates for TLS (implies --tls)")
    g.add_argument(
        "--token",
        help="bearer token sent as 'authorization: Bearer ...'; prefer --token-file or env "
        "TWOSTAGE_AUTH_TOKEN (arguments are visible in the process list)",
    )
    g.add_argument("--token-file", type=Path, help="file holding the bearer token")
    return p


def _json_option() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON on stdout instead of a table")
    return p


def _address(args: argparse.Namespace) -> str:
    return args.address or os.environ.get("TWOSTAGE_ADDRESS") or DEFAULT_ADDRESS


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "timeout": args.timeout,
        "tls": args.tls,
        "root_certificates": args.root_certs,
        "token": args.token
        or _token_file(args.token_file)
        or os.environ.get("TWOSTAGE_AUTH_TOKEN")
        or None,
    }


def _token_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise SystemExit(f"twostage: cannot read --token-file {path}: {exc}") from None


def _client(args: argparse.Namespace) -> TwostageClient:
    from twostage.clients.client import TwostageClient

    return TwostageClient(_address(args), **_client_kwargs(args))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _guarded(fn: Handler) -> Handler:
    """Turn failures into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from twostage.clients.errors import TwostageError, UnavailableError

        prog = f"twostage {args.command}"
        try:
            return fn(args)
        except UnavailableError as e:
            print(
                f"{prog}: cannot reach the server at {_address(args)}: {_one_line(e.message)}",
                file=sys.stderr,
            )
            return EXIT_SERVER_ERROR
        except TwostageError as e:
            print(f"{prog}: {e.code_name}: {_one_line(e.message)}", file=sys.stderr)
            return EXIT_SERVER_ERROR
        except (ValueError, OSError) as e:
            print(f"{prog}: {_one_line(str(e))}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _snippet(text: str, width: int = 60) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain text table; columns in ``right`` are right-aligned."""
    right = right or set()
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


# --- ingest ----------------------------------------------------------------------------------


def _documents(path: Path) -> tuple[Path, Iterator[Document]]:
    """The JSONL file to read and its documents. A folder is read as BEIR (corpus.jsonl)."""
    from twostage.clients.beir import corpus_path, document_text
    from twostage.clients.results import Document

    source = corpus_path(path) if path.is_dir() else path
    if not source.is_file():
        raise ValueError(
            f"{source}: no such file" + (" (not a BEIR folder)" if path.is_dir() else "")
        )

    def read() -> Iterator[Document]:
        with source.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{source}:{number}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: not JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{where}: expected a JSON object")
                doc_id = rec.get("id", rec.get("_id"))
                if doc_id is None or str(doc_id) == "":
                    raise ValueError(f"{where}: missing 'id' (or BEIR '_id')")
                text, title = rec.get("text", ""), rec.get("title", "")
                if not isinstance(text, str) or not isinstance(title, str):
                    raise ValueError(f"{where}: 'text' and 'title' must be strings")
                meta = rec.get("metadata") or {}
                if not isinstance(meta, dict):
                    raise ValueError(f"{where}: 'metadata' must be an object")
                metadata = {
                    str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()
                }
                if title:
                    metadata.setdefault("title", title)
                body = document_text(title, text)
                if not body:
                    raise ValueError(f"{where}: empty 'text' and 'title'")
                yield Document(str(doc_id), body, metadata)

    return source, read()


def _batched(items: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ingest(args: argparse.Namespace) -> int:
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from tqdm import tqdm

    from twostage.clients.errors import NotFoundError, TwostageError

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {args.parallel}")
    source, docs = _documents(args.file)
    # Read the whole file once before touching the server: a bad line fails fast, not midway.
    total = sum(1 for _ in _documents(args.file)[1])
    with _client(args) as client:
        try:
            client.describe_collection(args.collection)
            created = False
        except NotFoundError:
            client.create_collection(args.collection, space=args.space)
            created = True
        limit = client.info().limits.max_documents_per_upsert
        batch_size = min(args.batch_size, limit) if limit else args.batch_size
        sent = skipped = 0
        start = time.perf_counter()
        bar = tqdm(
            total=total,
            unit="doc",
            desc=f"ingest {args.collection}",
            disable=args.no_progress or None,
            file=sys.stderr,
        )

        def send(batch: list[Document]) -> tuple[int, int, int]:
            """Upsert the ids of ``batch`` the server lacks: (upserted, skipped, batch size)."""
            todo = batch
            if not args.no_resume:
                present = client.get(args.collection, [d.id for d in batch])
                have = {d.id for d in present.documents}
                todo = [d for d in batch if d.id not in have]
            done = (
                client.upsert(args.collection, todo, batch_size=len(todo)).upserted if todo else 0
            )
            return done, len(batch) - len(todo), len(batch)

        def collect(finished: set[Future[tuple[int, int, int]]]) -> None:
            nonlocal sent, skipped
            for future in finished:
                done, skip, n = future.result()
                sent, skipped = sent + done, skipped + skip
                bar.update(n)

        # A few batches in flight keep the server's batcher busy while the client waits.
        pending: set[Future[tuple[int, int, int]]] = set()
        try:
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                try:
                    for batch in _batched(docs, batch_size):
                        if len(pending) >= args.parallel:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            collect(finished)
                        pending.add(pool.submit(send, batch))
                    finished, pending = wait(pending)
                    collect(finished)
                finally:
                    for future in pending:
                        future.cancel()
        except TwostageError as e:
            bar.close()
            e.message = (
                f"{e.message} (after {sent} documents were acknowledged; "
                "re-run the same command to resume)"
            )
            raise
        bar.close()
        seconds = time.perf_counter() - start
        count = client.describe_collection(args.collection).count
    summary = {
        "collection": args.collection,
        "file": str(source),
        "created": created,
        "upserted": sent,
        "skipped_present": skipped,
        "seconds": round(seconds, 3),
        "docs_per_s": round(sent / seconds, 1) if seconds > 0 else 0.0,
        "collection_count": count,
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"ingested {sent} documents into '{args.collection}'"
            f"{' (created)' if created else ''} in {seconds:.1f} s "
            f"({summary['docs_per_s']} docs/s); skipped {skipped} already present; "
            f"the collection holds {count}"
        )
    return 0


# --- search / embed / rerank / info ----------------------------------------------------------


def _filters(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}"


def _search(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.search_detailed(
            args.collection,
            args.query,
            top_k=args.top_k,
            candidates=args.candidates,
            rerank=args.rerank,
            filter=_filters(args.filter),
            retrieval=args.retrieval,
            fusion=args.fusion,
            dense_candidates=args.dense_candidates,
            lexical_candidates=args.lexical_candidates,
            rerank_depth=args.rerank_depth,
        )
    t = result.timings
    if args.json:
        _print_json(
            {
                "reranked": result.reranked,
                "ranking": result.ranking,
                "hits": [
                    {
                        "rank": h.rank,
                        "id": h.id,
                        "score": h.score,
                        "dense_score": h.dense_score,
                        "dense_rank": h.dense_rank,
                        "lexical_score": h.lexical_score,
                        "lexical_rank": h.lexical_rank,
                        "rerank_score": h.rerank_score,
                        "text": h.text,
                        "metadata": dict(h.metadata),
                    }
                    for h in result.hits
                ],
                "timings_ms": {
                    "tokenize": t.tokenize_ns / 1e6,
                    "queue": t.queue_ns / 1e6,
                    "inference": t.inference_ns / 1e6,
                    "index": t.index_ns / 1e6,
                    "lexical": t.lexical_ns / 1e6,
                    "total": t.total_ns / 1e6,
                },
            }
        )
        return 0
    rows = [
        [
            str(h.rank),
            h.id,
            f"{h.score:.4f}",
            f"{h.dense_score:.4f}",
            str(h.dense_rank or "-"),
            f"{h.lexical_score:.2f}",
            str(h.lexical_rank or "-"),
            "-" if h.rerank_score is None else f"{h.rerank_score:.4f}",
            _snippet(h.text, 48),
        ]
        for h in result.hits
    ]
    headers = ["rank", "id", "score", "dense", "d.rank", "bm25", "l.rank", "rerank", "text"]
    print(_table(headers, rows, right={0, 2, 3, 4, 5, 6, 7}) if rows else "no hits")
    print(
        f"ranking: {result.ranking or ('rerank' if result.reranked else 'dense')}; server "
        f"{_ms(t.total_ns)} ms (inference {_ms(t.inference_ns)}, queue {_ms(t.queue_ns)}, "
        f"index {_ms(t.index_ns)}, lexical {_ms(t.lexical_ns)})"
    )
    return 0


def _texts_arg(texts: list[str]) -> list[str]:
    """Positional texts; a single '-' reads one text per line from stdin."""
    if texts == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return texts


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    texts = _texts_arg(args.texts)
    if not texts:
        raise ValueError("no texts to embed")
    with _client(args) as client:
        vectors = client.encode(texts, input_type=args.input_type, model=args.model)
    if args.json:
        _print_json({"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()})
        return 0
    for text, vec in zip(texts, vectors, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in vec[:6])
        print(
            f"dim {vec.shape[0]}  norm {float(np.linalg.norm(vec)):.4f}  [{head}, …]  "
            f"{_snippet(text, 40)}"
        )
    return 0


def _rerank(args: argparse.Namespace) -> int:
    docs = _texts_arg(args.documents)
    if not docs:
        raise ValueError("no documents to rerank")
    with _client(args) as client:
        results = client.rank(args.query, docs, top_k=args.top_k, model=args.model)
    if args.json:
        _print_json(
            [{"index": r.index, "score": r.score, "document": docs[r.index]} for r in results]
        )
        return 0
    rows = [
        [str(i), str(r.index), f"{r.score:.4f}", _snippet(docs[r.index])]
        for i, r in enumerate(results, start=1)
    ]
    print(_table(["rank", "index", "score", "document"], rows, right={0, 1, 2}))
    return 0


def _info(args: argparse.Namespace) -> int:
    import dataclasses

    with _client(args) as client:
        info = client.info()
        health = client.health()
        collections = client.list_collections()
    if args.json:
        _print_json(
            {
                "address": _address(args),
                "health": health,
                **dataclasses.asdict(info),
                "collections": [dataclasses.asdict(c) for c in collections],
            }
        )
        return 0
    print(f"twostage {info.version} at {_address(args)} on {info.device}: {health}")
    rows = [
        [
            m.name + (" *" if m.is_default else ""),
            m.kind,
            m.variant,
            m.provider,
            str(m.dim or len(m.labels) or ""),
            str(m.max_length),
            m.ranking or "-",
            _snippet(m.source, 40),
        ]
        for m in info.models
    ]
    print(
        _table(
            ["model", "kind", "variant", "provider", "dim/labels", "max len", "ranking", "source"],
            rows,
        )
    )
    limits = {k: v for k, v in dataclasses.asdict(info.limits).items() if v}
    print("limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    if collections:
        crow = [[c.name, str(c.count), str(c.dim), c.space, c.embedder] for c in collections]
        print(_table(["collection", "count", "dim", "space", "embedder"], crow, right={1, 2}))
    else:
        print("no collections")
    return 0


# --- eval ------------------------------------------------------------------------------------


def _modes(spec: str) -> list[str]:
    from twostage.clients.beir import MODES

    modes = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"--modes: unknown {unknown or spec!r}; choose from {', '.join(MODES)}")
    if "dense" not in modes:
        modes.insert(0, "dense")  # the baseline every paired test compares against
    return modes


def _eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from twostage.clients.beir import EvalSplit, evaluate

    split = EvalSplit.load(args.beir_dir, args.split, max_queries=args.max_queries)
    modes = _modes(args.modes)
    with _client(args) as client:
        client.describe_collection(args.collection)  # fail with one line before the bar shows
        bar = tqdm(
            total=len(split.queries) * len(modes),
            unit="query",
            desc="eval",
            disable=args.no_progress or None,
            file=sys.stderr,
        )
        try:
            report = evaluate(
                client,
                args.collection,
                split,
                split_name=args.split,
                top_k=args.top_k,
                candidates=args.candidates,
                modes=modes,
                concurrency=args.concurrency,
                progress=bar.update,
            )
        finally:
            bar.close()
    data = report.to_dict(with_runs=True)
    data["address"] = _address(args)
    data["beir_dir"] = str(args.beir_dir)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    if args.json:
        data.pop("runs")
        _print_json(data)
    else:
        print(report.table())
        if args.json_out:
            print(f"wrote {args.json_out}")
    return 0


# --- tune ------------------------------------------------------------------------------------


def _tune(args: argparse.Namespace) -> int:
    from twostage.clients.beir import EvalSplit

    split = EvalSplit.load(args.beir_dir, args.split, max_queries=args.max_queries)
    queries = [
        (text, {doc: float(g) for doc, g in split.qrels[qid].items() if g > 0})
        for qid, text in split.queries.items()
    ]
    queries = [q for q in queries if q[1]]
    with _client(args) as client:
        before = client.describe_collection(args.collection)
        print(
            f"tuning '{args.collection}' ({before.count} docs) on {len(queries)} labelled "
            f"queries of {args.split}; default now: {before.ranking}",
            file=sys.stderr,
        )
        result = client.tune(
            args.collection,
            queries,
            rerank=args.rerank,
            dry_run=args.dry_run,
            timeout=args.timeout if args.timeout > 60 else 3600.0,
        )
    if args.json:
        _print_json(
            {
                "collection": args.collection,
                "split": args.split,
                "queries": result.queries,
                "before": before.ranking,
                "ranking": result.ranking,
                "stored": result.stored,
                "modes": [m.__dict__ for m in result.modes],
            }
        )
        return 0
    rows = [
        [
            ("* " if m.chosen else "  ") + m.ranking,
            f"{m.ndcg10:.4f}",
            f"{m.delta_vs_dense:+.4f}",
            f"{m.p_value:.3g}",
            f"{m.recall100:.4f}" if m.recall100 else "-",
            str(m.queries),
        ]
        for m in result.modes
    ]
    headers = ["ranking", "nDCG@10", "vs dense", "p", "R@100", "queries"]
    print(_table(headers, rows, right={1, 2, 3, 4, 5}))
    print(f"before: {before.ranking}")
    verb = "stored" if result.stored else "would store (dry run)"
    print(f"after:  {result.ranking} ({verb}; a plain Search on '{args.collection}' uses it)")
    return 0


# --- load ------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> int:
    import asyncio

    from twostage.clients.loadtest import LoadConfig, load_texts, plot, run_load

    config = LoadConfig(
        rpc=args.rpc,
        queries=load_texts(args.queries),
        duration_s=args.duration,
        concurrency=args.concurrency,
        rate=args.rate,
        max_requests=args.requests,
        collection=args.collection or "",
        documents=load_texts(args.documents) if args.documents else (),
        batch=args.batch,
        top_k=args.top_k,
        candidates=args.candidates,
        rerank=args.rerank,
        timeout_s=args.timeout,
        drain_s=args.drain,
        seed=args.seed,
    )
    # Fail fast with one line on no server or a missing collection, not N identical errors.
    with _client(args) as client:
        client.health()
        if args.rpc == "search":
            client.describe_collection(config.collection)
    kwargs = _client_kwargs(args)
    kwargs.pop("timeout")
    report = asyncio.run(run_load(_address(args), config, **kwargs))
    data = report.to_dict()
    data["address"] = _address(args)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    if args.json:
        _print_json(data)
    else:
        print(report.table())
        for path in (args.json_out, args.plot):
            if path:
                print(f"wrote {path}")
    return 0


# --- registration ----------------------------------------------------------------------------


def _rerank_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--no-rerank",
        dest="rerank",
        action="store_const",
        const=False,
        help="first-stage ranking only",
    )
    g.add_argument(
        "--rerank",
        dest="rerank",
        action="store_const",
        const=True,
        help=(
            "require the cross-encoder rerank (default: only where `twostage tune` found it "
            "improves the collection)"
        ),
    )
    p.set_defaults(rerank=None)


def _retrieval_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("first stage (unset: the collection's default, tuned or hybrid)")
    g.add_argument("--retrieval", choices=["dense", "lexical", "hybrid"], default=None)
    g.add_argument(
        "--fusion",
        default=None,
        metavar="SPEC",
        help="hybrid fusion: rrf, rrf:K, zscore, zscore:DENSE_WEIGHT or adaptive",
    )
    g.add_argument("--dense-candidates", type=int, default=0, help="dense depth (0: candidates)")
    g.add_argument(
        "--lexical-candidates", type=int, default=0, help="lexical depth (0: candidates)"
    )
    g.add_argument(
        "--rerank-depth", type=int, default=0, help="candidates reranked (0: tuned or fitted)"
    )


def register(subparsers: Any) -> None:
    """Add the client commands to the ``twostage`` parser."""
    conn, js = _connection_options(), _json_option()

    p = subparsers.add_parser(
        "ingest",
        parents=[conn, js],
        help="load a JSONL file or BEIR folder into a collection",
        description=(
            "Upsert documents from FILE: JSONL with 'id', 'text' and optional 'title', "
            "'metadata' (an object), or a BEIR folder (its corpus.jsonl; title + text are "
            "embedded). Creates the collection if missing. Resumable: ids the server already "
            "holds are skipped (checked with Get per batch), so re-running after a failure "
            "only sends what is missing. Use --no-resume to overwrite documents that changed."
        ),
    )
    p.add_argument("collection")
    p.add_argument("file", type=Path, help="JSONL file, or a BEIR folder")
    p.add_argument("--batch-size", type=int, default=64, help="documents per Upsert (default 64)")
    p.add_argument("--parallel", type=int, default=2, help="batches in flight at once (default 2)")
    p.add_argument(
        "--space",
        choices=["cosine", "ip", "l2"],
        default="cosine",
        help="similarity of a newly created collection (default cosine)",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="upsert every document, even ids already present"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_guarded(_ingest))

    p = subparsers.add_parser(
        "search",
        parents=[conn, js],
        help="search a collection (ANN candidates + rerank)",
        description="Embed QUERY, take --candidates ANN neighbours, rerank them, print --top-k.",
    )
    p.add_argument("collection")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=10, help="hits to print (default 10)")
    p.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="first-stage candidates kept after fusion (default 100)",
    )
    p.add_argument(
        "--filter",
        action="append",
        metavar="KEY=VALUE",
        help="metadata equality filter (repeatable; applies to both channels)",
    )
    _retrieval_flags(p)
    _rerank_flags(p)
    p.set_defaults(handler=_guarded(_search))

    p = subparsers.add_parser(
        "embed",
        parents=[conn, js],
        help="embed texts with the bi-encoder",
        description="Print each text's embedding (dim, norm, first values); --json prints all.",
    )
    p.add_argument("texts", nargs="+", help="texts to embed; '-' reads one per line from stdin")
    p.add_argument("--input-type", choices=["query", "document"], default="query")
    p.add_argument("--model", default="", help="loaded embedder name (default: the server's)")
    p.set_defaults(handler=_guarded(_embed))

    p = subparsers.add_parser(
        "rerank",
        parents=[conn, js],
        help="score documents against a query (cross-encoder)",
        description="Rank DOCUMENTS by the cross-encoder's score for QUERY, best first.",
    )
    p.add_argument("query")
    p.add_argument("documents", nargs="+", help="documents; '-' reads one per line from stdin")
    p.add_argument("--top-k", type=int, default=None, help="keep the best K (default all)")
    p.add_argument("--model", default="", help="loaded reranker name (default: the server's)")
    p.set_defaults(handler=_guarded(_rerank))

    p = subparsers.add_parser(
        "info", parents=[conn, js], help="server version, health, models, limits, collections"
    )
    p.set_defaults(handler=_guarded(_info))

    p = subparsers.add_parser(
        "eval",
        parents=[conn, js],
        help="nDCG/MRR/Recall of a collection on a BEIR split",
        description=(
            "Run every judged query of BEIR_DIR/qrels/SPLIT.tsv through Search in each mode and "
            "report nDCG@10, MRR@10, Recall@10/100 (ir-measures), a paired t-test of nDCG@10 "
            "against dense-only, and latency percentiles. The collection must hold the BEIR "
            "corpus (`twostage ingest C BEIR_DIR`)."
        ),
    )
    p.add_argument("collection")
    p.add_argument("beir_dir", type=Path)
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--top-k", type=int, default=100, help="hits scored per query (default 100)")
    p.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="first-stage candidates per query (default 100)",
    )
    p.add_argument(
        "--modes",
        default="dense,lexical,hybrid,hybrid+rerank,default",
        help=(
            "comma-separated modes: dense, lexical, hybrid, hybrid+rerank, rerank (dense + "
            "rerank), default (a plain request: the collection's own ranking); dense is always "
            "run as the baseline of the paired tests (default: all but rerank)"
        ),
    )
    p.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    p.add_argument(
        "--concurrency", type=int, default=1, help="queries in flight (default 1: clean latencies)"
    )
    p.add_argument("--json-out", type=Path, help="write the full report (with runs) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_guarded(_eval))

    p = subparsers.add_parser(
        "tune",
        parents=[conn, js],
        help="fit a collection's ranking on labelled queries and store it",
        description=(
            "Send the judged queries of BEIR_DIR/qrels/SPLIT.tsv to the server, which measures "
            "every first-stage mode (dense, lexical, RRF, z-score weights, adaptive) and, with a "
            "reranker, its weight and depth; prints nDCG@10 with a paired test against "
            "dense-only, and stores the best in the collection's config (Search then uses it "
            "by default). Tune on a split you do not evaluate on."
        ),
    )
    p.add_argument("collection")
    p.add_argument("beir_dir", type=Path)
    p.add_argument("--split", default="train", help="qrels split to fit on (default train)")
    p.add_argument("--max-queries", type=int, help="use only the first N judged queries")
    p.add_argument("--dry-run", action="store_true", help="report without storing")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-rerank", dest="rerank", action="store_const", const=False)
    g.add_argument("--rerank", dest="rerank", action="store_const", const=True)
    p.set_defaults(rerank=None, handler=_guarded(_tune))

    p = subparsers.add_parser(
        "load",
        parents=[conn, js],
        help="load-test Search, Embed or Rerank",
        description=(
            "Closed loop (--concurrency N workers back to back) or open loop (--rate R Poisson "
            "arrivals per second, latency measured from each scheduled send time). Runs for "
            "--duration seconds or --requests calls, whichever ends first; prints throughput, "
            "errors by status code and p50/p90/p99/p99.9 latency (HdrHistogram). Only the "
            "address given (default loopback) is ever contacted."
        ),
    )
    p.add_argument("--rpc", choices=["search", "embed", "rerank"], required=True)
    p.add_argument(
        "--queries",
        type=Path,
        required=True,
        help="JSONL ('text' or 'query'; BEIR queries.jsonl works) or one per line",
    )
    loop = p.add_mutually_exclusive_group(required=True)
    loop.add_argument("--concurrency", type=int, help="closed loop: workers")
    loop.add_argument("--rate", type=float, help="open loop: requests per second (Poisson)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--requests", type=int, help="stop after this many requests")
    p.add_argument("--collection", help="collection to search (--rpc search)")
    p.add_argument(
        "--documents", type=Path, help="texts to rerank (--rpc rerank; default: the queries file)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=0,
        help="texts per Embed / documents per Rerank (default 1 / 20)",
    )
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=100)
    _rerank_flags(p)
    p.add_argument(
        "--drain",
        type=float,
        default=5.0,
        help="seconds calls in flight at the end may take before their deadline cuts them "
        "(counted as DEADLINE_EXCEEDED; default 5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of queries and arrivals")
    p.add_argument("--json-out", type=Path, help="write the report as JSON")
    p.add_argument("--plot", type=Path, help="write a latency plot (PNG)")
    p.set_defaults(handler=_guarded(_load))
