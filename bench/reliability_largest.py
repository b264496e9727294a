"""The largest legal requests: what each costs in time and resident memory.

Against a fresh ``twostage serve`` (embedder + reranker bundles), one call each of the largest
request the limits allow, in sequence: Embed of ``max_texts_per_request`` texts of
``max_text_chars`` characters, Rerank of that many such documents, ScorePairs of that many pairs
of two such texts, and a Search whose filter has ``max_filter_keys`` keys. For each: status,
seconds, the server's resident memory before and after (VmRSS) and its peak (VmHWM). Nearly all
of every text is thrown away by the model's truncation; the server must not pay for that part.

    python bench/reliability_largest.py
    python bench/reliability_largest.py --texts 64 --out /tmp/x.json   # a smaller run
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import grpc
from common import RESULTS, machine, markdown_table, now, scifact_passages
from reliability_common import EMBEDDER, RERANKER, Server, rss_mb, stop_on_sigterm

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc


def peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def long_text(passages: list[str], chars: int, seed: int) -> str:
    """Real prose, ``chars`` characters long (passages repeated from an offset)."""
    out: list[str] = []
    size = 0
    i = seed
    while size < chars:
        p = passages[i % len(passages)]
        out.append(p)
        size += len(p) + 1
        i += 1
    return " ".join(out)[:chars]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=0, help="texts per call (0 = the limit)")
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability-largest-cpu.json")
    args = parser.parse_args()
    stop_on_sigterm()
    models = {"embedder": EMBEDDER}
    if (RERANKER / "manifest.json").is_file():
        models["reranker"] = RERANKER
    work = Path(tempfile.mkdtemp(prefix="twostage-largest-"))
    server = Server(work, models)
    rows: list[dict] = []
    try:
        server.start()
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        with grpc.insecure_channel(server.address, options=options) as channel:
            info = pb_grpc.InfoStub(channel).GetInfo(pb.GetInfoRequest(), timeout=30)
            limits = info.limits
            n = args.texts or limits.max_texts_per_request
            passages = scifact_passages(None)
            texts = [long_text(passages, limits.max_text_chars, i * 7) for i in range(n)]
            inference = pb_grpc.InferenceStub(channel)
            collections = pb_grpc.CollectionsStub(channel)
            collections.CreateCollection(pb.CreateCollectionRequest(name="largest"), timeout=60)
            collections.Upsert(
                pb.UpsertRequest(
                    collection="largest",
                    documents=[pb.Document(id=str(i), text=p) for i, p in enumerate(passages[:50])],
                ),
                timeout=300,
            )
            calls = {
                f"Embed {n} x {limits.max_text_chars} chars": lambda: inference.Embed(
                    pb.EmbedRequest(texts=texts), timeout=600
                ),
                f"Search, filter of {limits.max_filter_keys} keys": lambda: pb_grpc.SearchStub(
                    channel
                ).Search(
                    pb.SearchRequest(
                        collection="largest",
                        query="cell biology",
                        filter={f"k{i}": "v" for i in range(limits.max_filter_keys)},
                    ),
                    timeout=60,
                ),
            }
            if "reranker" in models:
                calls[f"Rerank {n} x {limits.max_text_chars} chars"] = lambda: inference.Rerank(
                    pb.RerankRequest(query="what causes cancer", documents=texts), timeout=600
                )
                # Both sides long: the tokenizer's pair truncation costs memory that grows with
                # the product of the sides' lengths (750 MB for one pair of 40k-char sides).
                pairs = [pb.TextPair(text_a=t, text_b=texts[-1 - i]) for i, t in enumerate(texts)]
                calls[f"ScorePairs {n} x 2 x {limits.max_text_chars} chars"] = lambda: (
                    inference.ScorePairs(pb.ScorePairsRequest(pairs=pairs), timeout=600)
                )
            for name, call in calls.items():
                before = rss_mb(server.pid)
                began = time.perf_counter()
                try:
                    call()
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                rows.append(
                    {
                        "call": name,
                        "code": code,
                        "seconds": round(time.perf_counter() - began, 2),
                        "rss_mb_before": before,
                        "rss_mb_after": rss_mb(server.pid),
                        "rss_mb_peak": peak_mb(server.pid),
                        "alive": server.proc is not None and server.proc.poll() is None,
                    }
                )
                print(rows[-1], flush=True)
                if not rows[-1]["alive"]:
                    break
        server.stop()
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    report = {"when": now(), "machine": machine(), "texts": n, "calls": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    header = ["call", "code", "seconds", "RSS MB before -> after", "peak RSS MB"]
    print(
        markdown_table(
            header,
            [
                [
                    r["call"],
                    r["code"],
                    str(r["seconds"]),
                    f"{r['rss_mb_before']} -> {r['rss_mb_after']}",
                    str(r["rss_mb_peak"]),
                ]
                for r in rows
            ],
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
