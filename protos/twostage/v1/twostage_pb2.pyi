from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_TYPE_UNSPECIFIED: _ClassVar[InputType]
    INPUT_TYPE_QUERY: _ClassVar[InputType]
    INPUT_TYPE_DOCUMENT: _ClassVar[InputType]

class Analyzer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANALYZER_UNSPECIFIED: _ClassVar[Analyzer]
    ANALYZER_ENGLISH: _ClassVar[Analyzer]
    ANALYZER_SIMPLE: _ClassVar[Analyzer]
    ANALYZER_NONE: _ClassVar[Analyzer]

class Space(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPACE_UNSPECIFIED: _ClassVar[Space]
    SPACE_COSINE: _ClassVar[Space]
    SPACE_IP: _ClassVar[Space]
    SPACE_L2: _ClassVar[Space]

class Retrieval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_UNSPECIFIED: _ClassVar[Retrieval]
    RETRIEVAL_DENSE: _ClassVar[Retrieval]
    RETRIEVAL_LEXICAL: _ClassVar[Retrieval]
    RETRIEVAL_HYBRID: _ClassVar[Retrieval]

class FusionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_METHOD_UNSPECIFIED: _ClassVar[FusionMethod]
    FUSION_METHOD_RRF: _ClassVar[FusionMethod]
    FUSION_METHOD_ZSCORE: _ClassVar[FusionMethod]
    FUSION_METHOD_ADAPTIVE: _ClassVar[FusionMethod]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_EMBEDDER: _ClassVar[ModelKind]
    MODEL_KIND_RERANKER: _ClassVar[ModelKind]
    MODEL_KIND_CLASSIFIER: _ClassVar[ModelKind]
INPUT_TYPE_UNSPECIFIED: InputType
INPUT_TYPE_QUERY: InputType
INPUT_TYPE_DOCUMENT: InputType
ANALYZER_UNSPECIFIED: Analyzer
ANALYZER_ENGLISH: Analyzer
ANALYZER_SIMPLE: Analyzer
ANALYZER_NONE: Analyzer
SPACE_UNSPECIFIED: Space
SPACE_COSINE: Space
SPACE_IP: Space
SPACE_L2: Space
RETRIEVAL_UNSPECIFIED: Retrieval
RETRIEVAL_DENSE: Retrieval
RETRIEVAL_LEXICAL: Retrieval
RETRIEVAL_HYBRID: Retrieval
FUSION_METHOD_UNSPECIFIED: FusionMethod
FUSION_METHOD_RRF: FusionMethod
FUSION_METHOD_ZSCORE: FusionMethod
FUSION_METHOD_ADAPTIVE: FusionMethod
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_EMBEDDER: ModelKind
MODEL_KIND_RERANKER: ModelKind
MODEL_KIND_CLASSIFIER: ModelKind

class Metadata(_message.Message):
    __slots__ = ("tokenize_ns", "queue_ns", "inference_ns", "index_ns", "total_ns", "tokens", "models", "lexical_ns")
    TOKENIZE_NS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_NS_FIELD_NUMBER: _ClassVar[int]
    INDEX_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_NS_FIELD_NUMBER: _ClassVar[int]
    tokenize_ns: int
    queue_ns: int
    inference_ns: int
    index_ns: int
    total_ns: int
    tokens: int
    models: str
    lexical_ns: int
    def __init__(self, tokenize_ns: _Optional[int] = ..., queue_ns: _Optional[int] = ..., inference_ns: _Optional[int] = ..., index_ns: _Optional[int] = ..., total_ns: _Optional[int] = ..., tokens: _Optional[int] = ..., models: _Optional[str] = ..., lexical_ns: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "input_type", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    input_type: InputType
    model: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., input_type: _Optional[_Union[InputType, str]] = ..., model: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: bytes
    def __init__(self, vector: _Optional[bytes] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dim", "model", "metadata")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dim: int
    model: str
    metadata: Metadata
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dim: _Optional[int] = ..., model: _Optional[str] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "return_documents", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    model: str
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "score", "document")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    document: str
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., document: _Optional[str] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "metadata")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    metadata: Metadata
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class TextPair(_message.Message):
    __slots__ = ("text_a", "text_b")
    TEXT_A_FIELD_NUMBER: _ClassVar[int]
    TEXT_B_FIELD_NUMBER: _ClassVar[int]
    text_a: str
    text_b: str
    def __init__(self, text_a: _Optional[str] = ..., text_b: _Optional[str] = ...) -> None: ...

class ScorePairsRequest(_message.Message):
    __slots__ = ("pairs", "model")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[TextPair]
    model: str
    def __init__(self, pairs: _Optional[_Iterable[_Union[TextPair, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class PairScore(_message.Message):
    __slots__ = ("score", "probabilities", "label", "label_index")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    score: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    label: str
    label_index: int
    def __init__(self, score: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., label: _Optional[str] = ..., label_index: _Optional[int] = ...) -> None: ...

class ScorePairsResponse(_message.Message):
    __slots__ = ("scores", "label_names", "model", "metadata")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[PairScore]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    model: str
    metadata: Metadata
    def __init__(self, scores: _Optional[_Iterable[_Union[PairScore, _Mapping]]] = ..., label_names: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "M", "ef_construction", "space", "embedder", "ef", "analyzer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    ANALYZER_FIELD_NUMBER: _ClassVar[int]
    name: str
    M: int
    ef_construction: int
    space: Space
    embedder: str
    ef: int
    analyzer: Analyzer
    def __init__(self, name: _Optional[str] = ..., M: _Optional[int] = ..., ef_construction: _Optional[int] = ..., space: _Optional[_Union[Space, str]] = ..., embedder: _Optional[str] = ..., ef: _Optional[int] = ..., analyzer: _Optional[_Union[Analyzer, str]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "count", "dim", "space", "M", "ef_construction", "ef", "embedder", "embedder_source", "created_unix", "analyzer", "ranking", "tuned")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ANALYZER_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    TUNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    dim: int
    space: Space
    M: int
    ef_construction: int
    ef: int
    embedder: str
    embedder_source: str
    created_unix: int
    analyzer: Analyzer
    ranking: str
    tuned: bool
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ..., space: _Optional[_Union[Space, str]] = ..., M: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef: _Optional[int] = ..., embedder: _Optional[str] = ..., embedder_source: _Optional[str] = ..., created_unix: _Optional[int] = ..., analyzer: _Optional[_Union[Analyzer, str]] = ..., ranking: _Optional[str] = ..., tuned: _Optional[bool] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "text", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "sequence", "metadata")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    sequence: int
    metadata: Metadata
    def __init__(self, upserted: _Optional[int] = ..., sequence: _Optional[int] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "not_found")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("documents", "not_found")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class LabeledQuery(_message.Message):
    __slots__ = ("query", "relevant")
    class RelevantEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RELEVANT_FIELD_NUMBER: _ClassVar[int]
    query: str
    relevant: _containers.ScalarMap[str, float]
    def __init__(self, query: _Optional[str] = ..., relevant: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TuneRequest(_message.Message):
    __slots__ = ("collection", "queries", "rerank", "dry_run")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[LabeledQuery]
    rerank: bool
    dry_run: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[LabeledQuery, _Mapping]]] = ..., rerank: _Optional[bool] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class TuneMode(_message.Message):
    __slots__ = ("ranking", "ndcg10", "delta_vs_dense", "p_value", "recall100", "chosen", "queries")
    RANKING_FIELD_NUMBER: _ClassVar[int]
    NDCG10_FIELD_NUMBER: _ClassVar[int]
    DELTA_VS_DENSE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    RECALL100_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    ranking: str
    ndcg10: float
    delta_vs_dense: float
    p_value: float
    recall100: float
    chosen: bool
    queries: int
    def __init__(self, ranking: _Optional[str] = ..., ndcg10: _Optional[float] = ..., delta_vs_dense: _Optional[float] = ..., p_value: _Optional[float] = ..., recall100: _Optional[float] = ..., chosen: _Optional[bool] = ..., queries: _Optional[int] = ...) -> None: ...

class TuneResponse(_message.Message):
    __slots__ = ("modes", "ranking", "stored", "queries")
    MODES_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    modes: _containers.RepeatedCompositeFieldContainer[TuneMode]
    ranking: str
    stored: bool
    queries: int
    def __init__(self, modes: _Optional[_Iterable[_Union[TuneMode, _Mapping]]] = ..., ranking: _Optional[str] = ..., stored: _Optional[bool] = ..., queries: _Optional[int] = ...) -> None: ...

class Fusion(_message.Message):
    __slots__ = ("method", "rrf_k", "dense_weight")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DENSE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    method: FusionMethod
    rrf_k: float
    dense_weight: float
    def __init__(self, method: _Optional[_Union[FusionMethod, str]] = ..., rrf_k: _Optional[float] = ..., dense_weight: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "top_k", "candidates", "rerank", "ef", "filter", "reranker", "retrieval", "dense_candidates", "lexical_candidates", "fusion", "rerank_depth")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RERANKER_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    DENSE_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RERANK_DEPTH_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: str
    top_k: int
    candidates: int
    rerank: bool
    ef: int
    filter: _containers.ScalarMap[str, str]
    reranker: str
    retrieval: Retrieval
    dense_candidates: int
    lexical_candidates: int
    fusion: Fusion
    rerank_depth: int
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., candidates: _Optional[int] = ..., rerank: _Optional[bool] = ..., ef: _Optional[int] = ..., filter: _Optional[_Mapping[str, str]] = ..., reranker: _Optional[str] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., dense_candidates: _Optional[int] = ..., lexical_candidates: _Optional[int] = ..., fusion: _Optional[_Union[Fusion, _Mapping]] = ..., rerank_depth: _Optional[int] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "text", "metadata", "dense_score", "rerank_score", "dense_rank", "rank", "score", "lexical_score", "lexical_rank")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DENSE_SCORE_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    DENSE_RANK_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_RANK_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    metadata: _containers.ScalarMap[str, str]
    dense_score: float
    rerank_score: float
    dense_rank: int
    rank: int
    score: float
    lexical_score: float
    lexical_rank: int
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., dense_score: _Optional[float] = ..., rerank_score: _Optional[float] = ..., dense_rank: _Optional[int] = ..., rank: _Optional[int] = ..., score: _Optional[float] = ..., lexical_score: _Optional[float] = ..., lexical_rank: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "reranked", "ranking", "metadata")
    HITS_FIELD_NUMBER: _ClassVar[int]
    RERANKED_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    reranked: bool
    ranking: str
    metadata: Metadata
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., reranked: _Optional[bool] = ..., ranking: _Optional[str] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "source", "revision", "weights_sha256", "variant", "provider", "max_length", "dim", "pooling", "normalize", "labels", "activation", "ranking", "validation", "is_default")
    class ValidationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    source: str
    revision: str
    weights_sha256: str
    variant: str
    provider: str
    max_length: int
    dim: int
    pooling: str
    normalize: bool
    labels: _containers.RepeatedScalarFieldContainer[str]
    activation: str
    ranking: str
    validation: _containers.ScalarMap[str, float]
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., source: _Optional[str] = ..., revision: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., variant: _Optional[str] = ..., provider: _Optional[str] = ..., max_length: _Optional[int] = ..., dim: _Optional[int] = ..., pooling: _Optional[str] = ..., normalize: _Optional[bool] = ..., labels: _Optional[_Iterable[str]] = ..., activation: _Optional[str] = ..., ranking: _Optional[str] = ..., validation: _Optional[_Mapping[str, float]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_texts_per_request", "max_documents_per_upsert", "max_top_k", "max_candidates", "max_text_chars", "max_batch_tokens", "max_batch_size", "max_wait_ms", "max_queue_tokens", "max_inflight_requests", "max_filter_keys", "max_metadata_keys", "max_metadata_key_chars", "max_metadata_value_bytes", "max_id_chars", "max_tokenized_chars")
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENTS_PER_UPSERT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_KEY_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENIZED_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_texts_per_request: int
    max_documents_per_upsert: int
    max_top_k: int
    max_candidates: int
    max_text_chars: int
    max_batch_tokens: int
    max_batch_size: int
    max_wait_ms: int
    max_queue_tokens: int
    max_inflight_requests: int
    max_filter_keys: int
    max_metadata_keys: int
    max_metadata_key_chars: int
    max_metadata_value_bytes: int
    max_id_chars: int
    max_tokenized_chars: int
    def __init__(self, max_texts_per_request: _Optional[int] = ..., max_documents_per_upsert: _Optional[int] = ..., max_top_k: _Optional[int] = ..., max_candidates: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., max_queue_tokens: _Optional[int] = ..., max_inflight_requests: _Optional[int] = ..., max_filter_keys: _Optional[int] = ..., max_metadata_keys: _Optional[int] = ..., max_metadata_key_chars: _Optional[int] = ..., max_metadata_value_bytes: _Optional[int] = ..., max_id_chars: _Optional[int] = ..., max_tokenized_chars: _Optional[int] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("version", "models", "limits", "device")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    version: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: Limits
    device: str
    def __init__(self, version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...
