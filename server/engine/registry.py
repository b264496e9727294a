"""Loaded models by name, with a default per kind.

``Inference`` requests name a model or get the default of the right kind: the embedder for
Embed, the reranker for Rerank and Search, the reranker (else the classifier) for ScorePairs.
"""

from __future__ import annotations

from collections.abc import Iterator

from twostage.server.engine.models import CrossEncoder, Embedder, ServedModel
from twostage.server.errors import FailedPrecondition, InvalidArgument, NotFound


class ModelRegistry:
    """Name -> served model; the first model of each kind (or the one named so) is its default."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models: dict[str, ServedModel] = {}
        self._defaults: dict[str, str] = {}
        for model in models:
            if model.name in self._models:
                raise InvalidArgument(f"model name {model.name!r} used twice", field="model")
            self._models[model.name] = model
        for kind in ("embedder", "reranker", "classifier"):
            of_kind = [m for m in models if m.kind == kind]
            chosen = next((m for m in of_kind if m.name == kind), of_kind[0] if of_kind else None)
            if chosen is not None:
                self._defaults[kind] = chosen.name
                chosen.is_default = True

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ServedModel:
        try:
            return self._models[name]
        except KeyError:
            loaded = ", ".join(sorted(self._models)) or "none"
            raise NotFound(
                f"model {name!r} is not loaded (loaded: {loaded})", field="model"
            ) from None

    def default_name(self, kind: str) -> str | None:
        return self._defaults.get(kind)

    @property
    def has_reranker(self) -> bool:
        return "reranker" in self._defaults

    def embedder(self, name: str = "") -> Embedder:
        model = self._pick(name, ("embedder",), "Embed needs an embedder")
        if not isinstance(model, Embedder):
            raise InvalidArgument(
                f"model {model.name!r} is a {model.kind}, not an embedder", field="model"
            )
        return model

    def reranker(self, name: str = "") -> CrossEncoder:
        model = self._pick(name, ("reranker",), "reranking needs a reranker")
        if not isinstance(model, CrossEncoder) or model.kind != "reranker":
            raise InvalidArgument(
                f"model {model.name!r} is a {model.kind}, not a reranker", field="model"
            )
        return model

    def pair_scorer(self, name: str = "") -> CrossEncoder:
        model = self._pick(name, ("reranker", "classifier"), "ScorePairs needs a cross-encoder")
        if not isinstance(model, CrossEncoder):
            raise InvalidArgument(
                f"model {model.name!r} is a {model.kind}, not a cross-encoder", field="model"
            )
        return model

    def _pick(self, name: str, kinds: tuple[str, ...], what: str) -> ServedModel:
        if name:
            return self.get(name)
        for kind in kinds:
            default = self._defaults.get(kind)
            if default is not None:
                return self._models[default]
        raise FailedPrecondition(
            f"{what}, and none is loaded (load one with --model NAME=BUNDLE_DIR)", field="model"
        )
