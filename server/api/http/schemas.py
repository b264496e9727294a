"""Request bodies of the vendor routes, as the vendors define them (unknown fields ignored).

Only the shape is checked here; limits (texts per call, characters, top_n) are checked once, by the
gRPC servicer each route calls.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # vendors add fields over time; a client newer than us must still work
    model_config = ConfigDict(extra="ignore")


class OpenAIEmbeddingRequest(_Body):
    """OpenAI ``POST /v1/embeddings``."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class RerankDocument(_Body):
    text: str


class CohereRerankRequest(_Body):
    """Cohere v2 ``POST /v2/rerank``; with ``return_documents`` also Cohere v1 / Jina."""

    query: str
    documents: list[str | RerankDocument]
    model: str = ""
    top_n: int | None = Field(default=None, ge=1)
    # accepted for compatibility; documents are cut at the model's max length either way
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    return_documents: bool = False


class TEIEmbedRequest(_Body):
    """TEI ``POST /embed``."""

    inputs: str | list[str]
    normalize: bool = True
    # accepted for compatibility; inputs are always cut at the model's max length
    truncate: bool | None = None
    model: str = ""


class TEIRerankRequest(_Body):
    """TEI ``POST /rerank``."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None
    model: str = ""
