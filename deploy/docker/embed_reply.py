"""Check an Embed reply (JSON from grpc_call.py): N finite, L2-normalized vectors of ``dim`` floats.

``EmbedResponse.embeddings[i].vector`` is packed little-endian float32, base64 in JSON. The embedder
bundles put pooling and L2 normalization inside the graph, so every vector must have unit norm; a
zero, NaN or unnormalized vector means a broken bundle or runtime.

    python embed_reply.py '<reply json>' --count 2
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import struct
import sys
from collections.abc import Sequence
from typing import Any


def decode_vectors(reply: dict[str, Any]) -> tuple[int, list[tuple[float, ...]]]:
    """(dim, vectors) from an EmbedResponse as JSON; ValueError names what does not fit."""
    dim = int(reply.get("dim", 0))
    if dim <= 0:
        raise ValueError(f"reply has no positive dim (got {reply.get('dim')!r})")
    vectors = []
    for index, embedding in enumerate(reply.get("embeddings", [])):
        try:
            raw = base64.b64decode(embedding.get("vector", ""), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"embeddings[{index}].vector is not base64: {exc}") from exc
        if len(raw) != 4 * dim:
            raise ValueError(f"embeddings[{index}].vector has {len(raw)} bytes, expected 4 x {dim}")
        vectors.append(struct.unpack(f"<{dim}f", raw))
    return dim, vectors


def check_embeddings(reply: dict[str, Any], count: int, tolerance: float = 1e-2) -> list[float]:
    """The norms of the reply's embeddings, after checking count, finiteness and unit norm."""
    _, vectors = decode_vectors(reply)
    if len(vectors) != count:
        raise ValueError(f"expected {count} embeddings, got {len(vectors)}")
    norms = []
    for index, vector in enumerate(vectors):
        if not all(math.isfinite(x) for x in vector):
            raise ValueError(f"embeddings[{index}] has a non-finite value")
        norm = math.sqrt(sum(x * x for x in vector))
        if abs(norm - 1.0) > tolerance:
            raise ValueError(f"embeddings[{index}] has norm {norm:.4f}, expected 1 (L2-normalized)")
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
        dim, vectors = decode_vectors(reply)
    except (ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        print(f"embed_reply: {exc}", file=sys.stderr)
        return 1
    cosine = sum(a * b for a, b in zip(vectors[0], vectors[-1], strict=True))
    print(
        f"Embed: model {reply.get('model', '?')}, {len(vectors)} vectors of dim {dim}, "
        f"norms {', '.join(f'{n:.4f}' for n in norms)}, cos(first, last) {cosine:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
