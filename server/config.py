"""Server configuration: one frozen object from CLI flags, ``TWOSTAGE_*`` environment and TOML.

Precedence: flag > environment > TOML file > default. Built once at start (never at import),
validated, and logged with secrets redacted.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from twostage.server.errors import ConfigError

ENV_PREFIX = "TWOSTAGE_"
DEFAULT_EMBEDDER = "embedder"
DEFAULT_RERANKER = "reranker"


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``twostage serve`` needs. Field docs say why each knob matters."""

    # Where clients connect. 127.0.0.1 by default: exposing it is an explicit decision.
    listen: str = "127.0.0.1:50051"
    # Prometheus metrics HTTP port on the same host as `listen`; 0 disables it.
    metrics_port: int = 9464
    # Collections (SQLite + index snapshots) live here.
    data_dir: Path = Path("data")
    # Default bundles are looked up (and made, when missing) here.
    models_dir: Path = Path("models")
    # NAME=BUNDLE_DIR pairs; empty = the default bundles under models_dir.
    models: tuple[tuple[str, Path], ...] = ()
    # cpu (int8 variant) or cuda (fp16 variant, CUDA execution provider).
    device: str = "cpu"
    device_id: int = 0
    # Force a precision variant (fp32 / int8 / fp16); empty = the device's default.
    precision: str = ""
    # ONNX Runtime intra-op threads per session; 0 = all CPUs this process may use.
    intra_op_threads: int = 0
    # Threads that tokenize off the event loop (Rust encode_batch releases the GIL); 0 = auto:
    # 2 on CPU (the model needs the cores), up to 8 on CUDA (there tokenization is the bottleneck).
    tokenizer_threads: int = 0
    # Batching: a batch is cut at max_batch_tokens padded tokens or max_batch_size sequences;
    # the worker waits at most max_wait_ms for more work once the first item is queued.
    # 0 = the device's default (CPU: 8192 tokens / 64 seqs; CUDA: 65536 / 512).
    max_batch_tokens: int = 0
    max_batch_size: int = 0
    max_wait_ms: float = 2.0
    # Cap on a batch's padded / real tokens (CPU: padding is compute; 0 = device default:
    # 1.2 on CPU, no cap on CUDA where a wider batch costs little).
    max_padding_ratio: float = 0.0
    # Queue limit per model in tokens: over it, RESOURCE_EXHAUSTED at once (memory stays bounded).
    max_queue_tokens: int = 0
    # In-flight RPC limit; over it, RESOURCE_EXHAUSTED at once.
    max_inflight_requests: int = 256
    # Request limits.
    max_texts_per_request: int = 256
    max_documents_per_upsert: int = 1000
    max_text_chars: int = 100_000
    max_top_k: int = 1000
    max_candidates: int = 1000
    default_candidates: int = 100
    default_top_k: int = 10
    # Write an index snapshot after this many writes (and at shutdown); replay covers the rest.
    snapshot_every: int = 10_000
    # Seconds in-flight calls get to finish on SIGTERM before the server stops.
    grace_period: float = 20.0
    # Where to train the offline default reranker from when its bundle is missing (BEIR folder).
    reranker_train_data: Path | None = None
    # Optional bearer token required for writes and admin calls (Upsert, Delete, Create, Drop).
    # Give it by file (auth_token_file) or environment (TWOSTAGE_AUTH_TOKEN), never on the command
    # line: every local user can read a process's arguments.
    auth_token: str = ""
    # A file holding the bearer token (surrounding whitespace ignored); overrides auth_token.
    auth_token_file: Path | None = None
    # Require the token for reads too (Embed, Rerank, ScorePairs, Search, Get, List, Describe) on
    # both transports: for a server reachable by more than its trusted callers. Health, GetInfo and
    # metrics stay open.
    auth_reads: bool = False
    # HOST:PORT of the HTTP surface (OpenAI / Cohere / Jina / TEI shapes and every RPC as JSON),
    # served in the same event loop and through the same engine as gRPC; "off" disables it.
    http_listen: str = "127.0.0.1:8080"
    # Optional TLS: PEM certificate chain and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Skip the hash check of bundles at start (faster start for huge bundles; not recommended).
    skip_bundle_verify: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def batch_tokens(self) -> int:
        return self.max_batch_tokens or (65536 if self.device == "cuda" else 8192)

    @property
    def batch_size(self) -> int:
        return self.max_batch_size or (512 if self.device == "cuda" else 64)

    @property
    def padding_ratio_cap(self) -> float | None:
        if self.max_padding_ratio:
            return self.max_padding_ratio
        return None if self.device == "cuda" else 1.2

    @property
    def tokenize_threads(self) -> int:
        if self.tokenizer_threads:
            return self.tokenizer_threads
        return max(2, min(8, os.cpu_count() or 2)) if self.device == "cuda" else 2

    @property
    def queue_tokens(self) -> int:
        return self.max_queue_tokens or 16 * self.batch_tokens

    def validate(self) -> ServerConfig:
        if ":" not in self.listen:
            raise ConfigError(f"listen must be HOST:PORT, got {self.listen!r}", field="listen")
        try:
            port = int(self.listen.rsplit(":", 1)[1])
        except ValueError:
            raise ConfigError(f"listen port is not a number: {self.listen!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"listen port out of range: {port}", field="listen")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}", field="device")
        if self.precision and self.precision not in ("fp32", "int8", "fp16"):
            raise ConfigError(f"precision must be fp32, int8 or fp16, got {self.precision!r}")
        for name in (
            "max_texts_per_request",
            "max_documents_per_upsert",
            "max_top_k",
            "max_candidates",
            "max_inflight_requests",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0", field=name)
        if self.max_padding_ratio and self.max_padding_ratio < 1.0:
            raise ConfigError("max_padding_ratio must be >= 1.0", field="max_padding_ratio")
        if self.tokenizer_threads < 0:
            raise ConfigError("tokenizer_threads must be >= 0", field="tokenizer_threads")
        if self.max_wait_ms < 0 or self.grace_period < 0:
            raise ConfigError("max_wait_ms and grace_period must be >= 0")
        if self.http_listen != "off":
            head, sep, tail = self.http_listen.rpartition(":")
            if not sep or not head or not tail.isdigit() or not 0 <= int(tail) <= 65535:
                raise ConfigError(
                    f"http_listen must be HOST:PORT or off, got {self.http_listen!r}",
                    field="http_listen",
                )
        if self.auth_reads and not self.auth_token:
            raise ConfigError("auth_reads needs an auth_token", field="auth_reads")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together", field="tls_cert")
        names = [n for n, _ in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}", field="model")
        return self

    def redacted(self) -> dict[str, Any]:
        data = asdict(self)
        if data.get("auth_token"):
            data["auth_token"] = "***"
        data["models"] = [f"{n}={p}" for n, p in self.models]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items() if k != "extra"}


_FIELD_TYPES = {f.name: f for f in fields(ServerConfig)}


def _coerce(name: str, value: Any) -> Any:
    default = getattr(ServerConfig(), name)
    try:
        if name == "models":
            if isinstance(value, str):
                value = [v for v in value.replace(";", ",").split(",") if v.strip()]
            if isinstance(value, Mapping):
                value = [f"{k}={v}" for k, v in value.items()]
            return tuple(parse_model_spec(v) for v in value)
        if name in ("reranker_train_data", "tls_cert", "tls_key", "auth_token_file"):
            return Path(value) if value not in (None, "") else None
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, Path):
            return Path(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot read {value!r}", field=name) from None


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """``NAME=BUNDLE_DIR`` -> (name, path)."""
    name, sep, path = str(spec).partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(f"--model takes NAME=BUNDLE_DIR, got {spec!r}", field="model")
    return name.strip(), Path(path.strip())


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_file: Path | None = None,
) -> ServerConfig:
    """Merge TOML < environment < flags (``None`` flag values mean "not given")."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    toml_path = toml_file or (
        Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None
    )
    if toml_path is not None:
        try:
            data = tomllib.loads(Path(toml_path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {toml_path}: {exc}") from None
        section = data.get("server", data)
        for key, value in section.items():
            if key not in _FIELD_TYPES:
                raise ConfigError(f"config file {toml_path}: unknown key {key!r}", field=key)
            values[key] = _coerce(key, value)
    for name in _FIELD_TYPES:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "" and name != "extra":
            values[name] = _coerce(name, raw)
    for name, value in (flags or {}).items():
        if value is None or name not in _FIELD_TYPES:
            continue
        if name == "models" and not value:
            continue
        values[name] = _coerce(name, value)
    token_file = values.get("auth_token_file")
    if token_file is not None:
        values["auth_token"] = read_token_file(token_file)
    return replace(ServerConfig(), **values).validate()


def read_token_file(path: Path) -> str:
    """The bearer token in ``path``: one line, surrounding whitespace dropped, not empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"auth_token_file: cannot read {path}: {exc}", field="auth_token_file"
        ) from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(
            f"auth_token_file: {path} must hold one token without spaces", field="auth_token_file"
        )
    return token
