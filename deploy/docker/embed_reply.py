"""Check an Embed reply (JSON from grpc_call.py): N finite, L2-normalized vectors of one dimension.

The embedder bundles put pooling and L2 normalization inside the graph, so every vector the server
returns must have unit norm; a zero, NaN or unnormalized vector means a broken bundle or runtime.

    python embed_reply.py '<reply json>' [--count 2]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

MIN_DIM = 8  # shorter number lists in a reply are not embeddings (e.g. timings, token counts)


def number_lists(node: Any) -> Iterator[list[float]]:
    """Every list of numbers in a JSON value, depth first, wherever the proto places it."""
    if isinstance(node, list):
        if node and all(isinstance(x, int | float) and not isinstance(x, bool) for x in node):
            yield node
        else:
            for item in node:
                yield from number_lists(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from number_lists(value)


def check_embeddings(reply: Any, count: int, tolerance: float = 1e-2) -> list[float]:
    """The norms of the reply's ``count`` embeddings; ValueError says what is wrong."""
    vectors = [v for v in number_lists(reply) if len(v) >= MIN_DIM]
    if len(vectors) != count:
        raise ValueError(f"expected {count} embeddings, found {len(vectors)}")
    dims = {len(v) for v in vectors}
    if len(dims) != 1:
        raise ValueError(f"embeddings differ in dimension: {sorted(dims)}")
    norms = []
    for index, vector in enumerate(vectors):
        if not all(math.isfinite(x) for x in vector):
            raise ValueError(f"embedding {index} has a non-finite value")
        norm = math.sqrt(sum(x * x for x in vector))
        if abs(norm - 1.0) > tolerance:
            raise ValueError(f"embedding {index} has norm {norm:.4f}, expected 1 (L2-normalized)")
        norms.append(norm)
    return norms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check an Embed reply")
    parser.add_argument("reply", help="the reply as JSON")
    parser.add_argument("--count", type=int, default=2, help="number of texts sent (default 2)")
    args = parser.parse_args(argv)
    try:
        reply = json.loads(args.reply)
        norms = check_embeddings(reply, args.count)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        print(f"embed_reply: {exc}", file=sys.stderr)
        return 1
    vectors = [v for v in number_lists(reply) if len(v) >= MIN_DIM]
    cosine = sum(a * b for a, b in zip(vectors[0], vectors[-1], strict=True))
    print(
        f"Embed: {len(vectors)} vectors, dim {len(vectors[0])}, "
        f"norms {', '.join(f'{n:.4f}' for n in norms)}, cos(first, last) {cosine:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
