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

# A text is cut to max_length * this many characters before the tokenizer sees it: the model reads
# at most max_length tokens, and English averages ~4-5 characters a token, so the cut keeps about
# three windows. A single text whose cut still gives fewer than max_length tokens (long URLs,
# base64) is tokenized again uncut, so its result is exact; a pair's sides are cut further, to
# one window each (see TextTokenizer._window_texts).
CHARS_PER_TOKEN = 16


def cut(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` characters, at the last whitespace of the final tenth if any."""
    if len(text) <= budget:
        return text
    space = text.rfind(" ", budget - budget // 10, budget)
    return text[: space if space > 0 else budget]


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

    @property
    def char_budget(self) -> int:
        """Characters of a text the tokenizer is given (see :data:`CHARS_PER_TOKEN`)."""
        return self.max_length * CHARS_PER_TOKEN

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize single texts (with special tokens), truncated at ``max_length``."""
        budget = self.char_budget
        inputs = [cut(t, budget) for t in texts]
        encodings = self._tok.encode_batch(inputs, add_special_tokens=True)
        again = [
            i
            for i, (t, x, e) in enumerate(zip(texts, inputs, encodings, strict=True))
            if len(x) < len(t) and len(e.ids) < self.max_length
        ]
        if again:  # the cut lost tokens the model would have read
            redone = self._tok.encode_batch([texts[i] for i in again], add_special_tokens=True)
            for i, e in zip(again, redone, strict=True):
                encodings[i] = e
        return [_to_encoded(e) for e in encodings]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        """Tokenize (a, b) pairs as one sequence each, as a cross-encoder reads them.

        Truncation follows the tokenizer's strategy (``longest_first``): the longer side is cut.
        """
        sides = self._window_texts([t for pair in pairs for t in pair])
        encodings = self._tok.encode_batch(list(zip(sides[::2], sides[1::2], strict=True)))
        return [_to_encoded(e) for e in encodings]

    def _window_texts(self, texts: Sequence[str]) -> list[str]:
        """Each text cut to the characters of its first ``max_length`` tokens.

        A pair is truncated by the tokenizer with every overflow combination of its two sides
        kept, so its memory grows with the product of their lengths (measured: ~135 MB for one
        pair of 4,096-token sides, gigabytes for a Rerank of long documents). Cutting each side
        to one window first (a single text's truncation costs linear memory) keeps the pair small
        and leaves what the model reads as it was: ``longest_first`` keeps at most one window of
        either side.
        """
        budget = self.char_budget
        out = [cut(t, budget) for t in texts]
        long = [i for i, t in enumerate(out) if len(t) > 2 * self.max_length]
        if long:
            encodings = self._tok.encode_batch([out[i] for i in long], add_special_tokens=False)
            for i, e in zip(long, encodings, strict=True):
                if len(e.ids) >= self.max_length:
                    out[i] = out[i][: e.offsets[-1][1]]
        return out


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
