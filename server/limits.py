"""Fixed request limits: the shapes a request may take that are not operator settings.

Settable limits (texts per call, characters per text, top_k, ...) live in
:class:`~twostage.server.config.ServerConfig`; the ones here bound the work and storage one
request can cause whatever the operator chose, and are reported by ``Info`` next to them.

Names are matched as a whole string (``fullmatch``): ``re.match`` with ``$`` accepts a trailing
newline, and a collection name becomes a folder.
"""

from __future__ import annotations

import re

# A collection name becomes a folder name: letters, digits, '_', '.', '-', starting with a letter
# or digit (so never '.', '..' or a hidden file), at most 64 characters, nothing else.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 characters: letters, digits, '_', '-', '.'; starting with a letter or digit"
# A document id is stored, never a path: any text without NUL, at most this many characters.
MAX_ID_CHARS = 512
# Metadata is stored per document, indexed as one filter row per key and returned with every hit.
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_BYTES = 8192  # UTF-8 bytes
# A filter is an intersection of (key, value) lookups, one SQL term per key.
MAX_FILTER_KEYS = 32
# Index parameters of a collection (inclusive ranges), at creation and in a stored config alike.
INDEX_PARAM_RANGES = {"M": (2, 256), "ef_construction": (10, 4096), "ef": (1, 10_000)}
# Tune's labelled queries per call.
MAX_TUNE_QUERIES = 10_000


def valid_name(value: object) -> bool:
    """True when ``value`` is a whole valid collection name."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def filter_problem(filter: dict[str, str]) -> str | None:
    """What is wrong with a search filter against the limits, or None."""
    if len(filter) > MAX_FILTER_KEYS:
        return f"{len(filter)} keys, the limit is {MAX_FILTER_KEYS}"
    return metadata_problem(filter)


def metadata_problem(metadata: dict[str, str]) -> str | None:
    """What is wrong with one document's metadata against the limits, or None."""
    if len(metadata) > MAX_METADATA_KEYS:
        return f"{len(metadata)} keys, the limit is {MAX_METADATA_KEYS}"
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            return f"key {key[:40]!r}: keys must be 1-{MAX_METADATA_KEY_CHARS} characters"
        if "\x00" in key:
            return f"key {key[:40]!r} contains NUL"
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_METADATA_VALUE_BYTES:
            return f"value of {key[:40]!r}: {size} bytes, the limit is {MAX_METADATA_VALUE_BYTES}"
    return None
