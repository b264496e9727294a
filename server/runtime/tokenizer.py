"""Tokenization with the Rust ``tokenizers`` fast tokenizer.

``encode_batch`` releases the GIL, so several threads tokenize in parallel. Padding is not done
here: a request's sequences are padded only when the batcher packs them with other requests' into
one model batch (:func:`pad_batch`), to the longest sequence of that batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer

from twostage.server.errors import BundleError


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized sequence (ids, segment ids), unpadded."""

    ids: np.ndarray  # int64 [length]
    type_ids: np.ndarray  # int64 [length]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TextTokenizer:
    """The bundle's tokenizer, set to truncate at the bundle's max length and never pad.

    The shipped ``tokenizer.json`` of some checkpoints (all-MiniLM-L6-v2) pads to a fixed 128 and
    truncates at 128; both are reset here so a short query costs its own length and passages keep
    up to ``max_length`` tokens.
    """

    def __init__(self, tokenizer: _HFTokenizer, max_length: int, pad_id: int) -> None:
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: Path | str, max_length: int) -> TextTokenizer:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        try:
            tok = _HFTokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise BundleError(f"cannot load tokenizer {file}: {exc}") from None
        pad_id = 0
        if tok.padding is not None and "pad_id" in tok.padding:
            pad_id = int(tok.padding["pad_id"])
        else:
            for token in ("[PAD]", "<pad>", "<|pad|>"):
                tid = tok.token_to_id(token)
                if tid is not None:
                    pad_id = tid
                    break
        return cls(tok, max_length, pad_id)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize single texts (with special tokens), truncated at ``max_length``."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=True)
        return [_to_encoded(e) for e in encodings]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        """Tokenize (a, b) pairs as one sequence each, as a cross-encoder reads them.

        Truncation follows the tokenizer's strategy (``longest_first``): the longer side is cut.
        """
        encodings = self._tok.encode_batch([(a, b) for a, b in pairs], add_special_tokens=True)
        return [_to_encoded(e) for e in encodings]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e) for e in self.encode(texts)]


def _to_encoded(encoding: object) -> Encoded:
    return Encoded(
        ids=np.asarray(encoding.ids, dtype=np.int64),  # type: ignore[attr-defined]
        type_ids=np.asarray(encoding.type_ids, dtype=np.int64),  # type: ignore[attr-defined]
    )


def pad_batch(
    items: Sequence[Encoded], pad_id: int, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Pad a batch to its longest sequence; return the feeds the graph declares.

    ``input_names`` comes from the ONNX graph (``session.get_inputs()``), so models without
    ``token_type_ids`` are fed only what they take.
    """
    n = len(items)
    width = max((len(e) for e in items), default=1) or 1
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    want_types = "token_type_ids" in input_names
    types = np.zeros((n, width), dtype=np.int64) if want_types else None
    for row, item in enumerate(items):
        length = len(item)
        ids[row, :length] = item.ids
        mask[row, :length] = 1
        if types is not None:
            types[row, :length] = item.type_ids
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name == "input_ids":
            feeds[name] = ids
        elif name == "attention_mask":
            feeds[name] = mask
        elif name == "token_type_ids" and types is not None:
            feeds[name] = types
        else:
            raise BundleError(f"the ONNX graph takes an input {name!r} this runtime cannot build")
    return feeds
