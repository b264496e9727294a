"""Durability: SIGKILL the server at random moments during concurrent upserts and snapshots.

A real ``twostage serve`` (the embedder bundle only, ``--snapshot-every`` small so index snapshots
happen all the time) takes upserts from ``--writers`` concurrent clients. A document counts as
acknowledged only once its Upsert returned OK. The server is killed with SIGKILL ``--kills`` times,
each at a random moment (``--min-interval`` .. ``--max-interval`` seconds after it was SERVING),
and restarted on the same data dir and port. After each restart, with the writers paused:

- every acknowledged id is read back with Collections.Get (all of them, every time), with the
  text it was acknowledged with;
- a sample is searched for (dense Search with the document's own text must return its id in the
  top ``--top-k``): every document acknowledged since the previous restart (the tail the server
  replays), capped at ``--sample-new``, plus ``--sample-old`` older ones at random;
- restart-to-SERVING time is measured by the health RPC (Health.Watch, no fixed sleeps).

At the end every acknowledged document is searched for once (``--no-final-search`` skips it).
Reported: kills, acknowledged documents, lost (missing or changed), unsearchable, restart p50/p99.

    python bench/reliability_killloop.py                  # 20 kills
    python bench/reliability_killloop.py --kills 5 --out /tmp/killloop.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from common import RESULTS, machine, markdown_table, now, scifact_passages
from reliability_common import EMBEDDER, Server, percentile_ms, stop_on_sigterm

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

COLLECTION = "killloop"
SEARCH_CLIENTS = 4
CHANNEL_OPTIONS = [
    # Writers reconnect quickly after a restart instead of backing off for seconds.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]


class Ledger:
    """Acknowledged documents (id -> text) and the order they were acknowledged in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.texts: dict[str, str] = {}
        self.order: list[str] = []
        self.failed_calls = 0

    def ack(self, docs: list[pb.Document]) -> None:
        with self.lock:
            for d in docs:
                if d.id not in self.texts:
                    self.order.append(d.id)
                self.texts[d.id] = d.text

    def snapshot(self) -> tuple[dict[str, str], list[str]]:
        with self.lock:
            return dict(self.texts), list(self.order)


class Texts:
    """Unique document texts: SciFact abstracts, then abstracts with a second abstract's start."""

    def __init__(self, passages: list[str]) -> None:
        self.passages = passages
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> tuple[int, str]:
        with self.lock:
            k, self.next = self.next, self.next + 1
        n = len(self.passages)
        text = self.passages[k % n]
        if k >= n:
            text = f"{text} {self.passages[(k * 7919 + k // n) % n][:300]}"
        return k, text


def writer(
    address: str,
    texts: Texts,
    ledger: Ledger,
    batch: int,
    writing: threading.Event,
    stop: threading.Event,
) -> None:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.CollectionsStub(channel)
        while not stop.is_set():
            writing.wait()
            docs = []
            for _ in range(batch):
                k, text = texts.take()
                docs.append(pb.Document(id=f"doc{k}", text=text, metadata={"k": str(k % 5)}))
            try:
                # wait_for_ready: while the server is down the call waits for it to come back.
                stub.Upsert(
                    pb.UpsertRequest(collection=COLLECTION, documents=docs),
                    timeout=30,
                    wait_for_ready=True,
                )
            except grpc.RpcError:
                ledger.failed_calls += 1  # not acknowledged: may or may not be stored
                continue
            ledger.ack(docs)


def check_present(channel: grpc.Channel, texts: dict[str, str], order: list[str]) -> list[str]:
    """Ids acknowledged but missing (or stored with another text) after the restart."""
    stub = pb_grpc.CollectionsStub(channel)
    lost = []
    for start in range(0, len(order), 256):
        ids = order[start : start + 256]
        reply = stub.Get(pb.GetRequest(collection=COLLECTION, ids=ids), timeout=60)
        found = {d.id: d.text for d in reply.documents}
        lost += [i for i in ids if found.get(i) != texts[i]]
    return lost


def check_searchable(
    channel: grpc.Channel, texts: dict[str, str], ids: list[str], top_k: int
) -> list[str]:
    """Ids whose own text does not find them in a dense Search's top ``top_k``."""
    stub = pb_grpc.SearchStub(channel)

    def found(doc_id: str) -> bool:
        reply = stub.Search(
            pb.SearchRequest(
                collection=COLLECTION,
                query=texts[doc_id],
                top_k=top_k,
                retrieval=pb.RETRIEVAL_DENSE,
                rerank=False,
            ),
            timeout=60,
        )
        return doc_id in {h.id for h in reply.hits}

    # Concurrent, so the server batches the query embeddings as it would for many users.
    with ThreadPoolExecutor(SEARCH_CLIENTS) as pool:
        return [i for i, ok in zip(ids, pool.map(found, ids), strict=True) if not ok]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4, help="concurrent upsert clients")
    parser.add_argument("--batch", type=int, default=8, help="documents per Upsert")
    parser.add_argument("--snapshot-every", type=int, default=200, help="server flag")
    parser.add_argument("--min-interval", type=float, default=1.0, help="s after SERVING")
    parser.add_argument("--max-interval", type=float, default=5.0, help="s after SERVING")
    parser.add_argument("--sample-new", type=int, default=300, help="searched per restart")
    parser.add_argument("--sample-old", type=int, default=100, help="searched per restart")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--no-final-search", action="store_true")
    parser.add_argument("--embedder", type=Path, default=EMBEDDER)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability-killloop-cpu.json")
    parser.add_argument("--keep", action="store_true", help="keep the server's scratch dir")
    args = parser.parse_args()
    stop_on_sigterm()

    rng = random.Random(args.seed)
    texts = Texts(scifact_passages(None))
    ledger = Ledger()
    work = Path(tempfile.mkdtemp(prefix="twostage-killloop-"))
    server = Server(
        work,
        {"embedder": args.embedder},
        extra=["--snapshot-every", str(args.snapshot_every), "--grace-period", "5"],
    )
    restarts: list[float] = []
    rounds: list[dict] = []
    lost: set[str] = set()
    unsearchable: set[str] = set()
    searched: set[str] = set()
    stop = threading.Event()
    writing = threading.Event()
    threads: list[threading.Thread] = []
    began = time.monotonic()
    try:
        server.start()
        with grpc.insecure_channel(server.address) as channel:
            pb_grpc.CollectionsStub(channel).CreateCollection(
                pb.CreateCollectionRequest(name=COLLECTION), timeout=60
            )
        threads = [
            threading.Thread(
                target=writer,
                args=(server.address, texts, ledger, args.batch, writing, stop),
                daemon=True,
            )
            for _ in range(args.writers)
        ]
        writing.set()
        for t in threads:
            t.start()
        checked_upto = 0
        for kill in range(1, args.kills + 1):
            time.sleep(rng.uniform(args.min_interval, args.max_interval))  # the random moment
            acked_before_kill = len(ledger.order)
            server.kill()
            restart_s = server.start()
            restarts.append(restart_s)
            # Writers pause while the restart is checked (calls already in flight finish), so
            # the checks measure the store, not a queue full of upserts; they resume after.
            writing.clear()
            acked, order = ledger.snapshot()
            check_began = time.monotonic()
            with grpc.insecure_channel(server.address) as channel:
                gone = check_present(channel, acked, order)
                new = order[checked_upto:]
                sample = new[-args.sample_new :] if args.sample_new else []
                older = order[:checked_upto]
                sample += rng.sample(older, min(args.sample_old, len(older)))
                missing = check_searchable(channel, acked, sample, args.top_k)
            checked_upto = len(order)
            writing.set()
            lost.update(gone)
            unsearchable.update(missing)
            searched.update(sample)
            rounds.append(
                {
                    "kill": kill,
                    "acked_at_kill": acked_before_kill,
                    "acked_checked": len(order),
                    "restart_to_serving_s": round(restart_s, 3),
                    "lost": len(gone),
                    "searched": len(sample),
                    "unsearchable": len(missing),
                    "check_s": round(time.monotonic() - check_began, 2),
                }
            )
            print(
                f"kill {kill}/{args.kills}: {len(order)} acknowledged, lost {len(gone)}, "
                f"searched {len(sample)} (unsearchable {len(missing)}), "
                f"restart {restart_s:.2f} s"
            )
        stop.set()
        writing.set()
        for t in threads:
            t.join(60)
        acked, order = ledger.snapshot()
        with grpc.insecure_channel(server.address) as channel:
            final_lost = check_present(channel, acked, order)
            final_missing: list[str] = []
            if not args.no_final_search:
                final_missing = check_searchable(channel, acked, order, args.top_k)
                searched.update(order)
        lost.update(final_lost)
        unsearchable.update(final_missing)
        exit_code = server.stop()
    finally:
        stop.set()
        writing.set()
        server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "when": now(),
        "machine": machine(),
        "settings": {
            "kills": args.kills,
            "writers": args.writers,
            "batch": args.batch,
            "snapshot_every": args.snapshot_every,
            "kill_interval_s": [args.min_interval, args.max_interval],
            "top_k": args.top_k,
            "searched": "every restart: the documents acknowledged since the previous one "
            f"(last {args.sample_new}) + {args.sample_old} older at random; "
            + ("at the end: all" if not args.no_final_search else "no final full search"),
        },
        "kills": len(restarts),
        "acknowledged_docs": len(ledger.order),
        "unacknowledged_upsert_calls": ledger.failed_calls,
        "lost": len(lost),
        "lost_examples": sorted(lost)[:20],
        "searched_docs": len(searched),
        "unsearchable": len(unsearchable),
        "unsearchable_examples": sorted(unsearchable)[:20],
        "restart_to_serving_p50_s": round((percentile_ms(restarts, 50) or 0) / 1000, 3),
        "restart_to_serving_p99_s": round((percentile_ms(restarts, 99) or 0) / 1000, 3),
        "exit_code_on_sigterm": exit_code,
        "wall_s": round(time.monotonic() - began, 1),
        "rounds": rounds,
    }
    result["machine"]["load_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    header = ["kills", "acknowledged", "lost", "searched", "unsearchable", "restart p50 / p99 s"]
    row = [
        str(result["kills"]),
        str(result["acknowledged_docs"]),
        str(result["lost"]),
        str(result["searched_docs"]),
        str(result["unsearchable"]),
        f"{result['restart_to_serving_p50_s']} / {result['restart_to_serving_p99_s']}",
    ]
    print(markdown_table(header, [row]))
    print(f"wrote {args.out}")
    return 1 if lost or unsearchable else 0


if __name__ == "__main__":
    raise SystemExit(main())
