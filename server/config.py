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


def _opt(default: Any, help: str, *, flag: str | None = "", **argparse_kwargs: Any) -> Any:
    """A setting: its default, and how ``twostage serve`` declares its flag (``flag=None``: no
    flag; ``""``: ``--<name-with-dashes>``). Every setting also reads ``TWOSTAGE_<NAME>`` and the
    TOML file, so a setting is declared here once."""
    metadata = {"help": help, "flag": flag, "argparse": argparse_kwargs}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``twostage serve`` needs. Field docs say why each knob matters."""

    listen: str = _opt(
        "127.0.0.1:50051", "HOST:PORT to serve gRPC on; exposing it beyond localhost is a choice"
    )
    metrics_port: int = _opt(9464, "Prometheus metrics HTTP port on the listen host; 0 = off")
    data_dir: Path = _opt(Path("data"), "collections (SQLite + index snapshots) live here")
    models_dir: Path = _opt(
        Path("models"), "default bundles are looked up (and made, when missing) here"
    )
    models: tuple[tuple[str, Path], ...] = _opt(
        (),
        "serve this bundle under NAME (repeatable); none = the default bundles",
        flag="--model",
        metavar="NAME=BUNDLE_DIR",
        action="append",
    )
    device: str = _opt(
        "cpu", "cpu runs the int8 variant, cuda the fp16 one", choices=("cpu", "cuda")
    )
    device_id: int = _opt(0, "CUDA device index")
    precision: str = _opt(
        "",
        "force a bundle variant; empty = the device's default",
        choices=("fp32", "int8", "fp16"),
    )
    intra_op_threads: int = _opt(
        0, "ONNX Runtime threads per model; 0 = all CPUs this process may use"
    )
    tokenizer_threads: int = _opt(
        0,
        "threads that tokenize off the event loop; 0 = 2 on CPU (the model needs the cores), "
        "up to 8 on CUDA (there tokenization is the bottleneck)",
    )
    max_batch_tokens: int = _opt(
        0, "padded tokens per model batch; 0 = the device's default (CPU 8192, CUDA 65536)"
    )
    max_batch_size: int = _opt(
        0, "sequences per model batch; 0 = the device's default (CPU 64, CUDA 512)"
    )
    max_wait_ms: float = _opt(
        0.0,
        "how long an idle model waits for company before running what is queued; 0 = run at "
        "once (a busy model batches what queues meanwhile: bench_max_wait.py measured 0 against "
        "2 ms at half the single-query latency and the same throughput on CPU)",
    )
    max_padding_ratio: float = _opt(
        0.0,
        "cap on a batch's padded / real tokens; 0 = the device's default (CPU 1.2: padding is "
        "compute there; CUDA none)",
    )
    max_queue_tokens: int = _opt(
        0, "queued tokens per model before RESOURCE_EXHAUSTED; 0 = 16 batches"
    )
    max_inflight_requests: int = _opt(256, "calls in flight before RESOURCE_EXHAUSTED")
    max_texts_per_request: int = _opt(256, "texts per Embed, documents per Rerank")
    max_documents_per_upsert: int = _opt(1000, "documents per Upsert call")
    max_text_chars: int = _opt(100_000, "characters per text, query or document")
    max_top_k: int = _opt(1000, "largest Search top_k")
    max_candidates: int = _opt(1000, "largest Search candidates (per channel too)")
    default_candidates: int = _opt(100, "Search candidates when a request gives none")
    default_top_k: int = _opt(10, "Search top_k when a request gives none")
    snapshot_every: int = _opt(
        10_000, "write an index snapshot after this many writes (and at shutdown)"
    )
    grace_period: float = _opt(20.0, "seconds in-flight calls get to finish on SIGTERM")
    reranker_train_data: Path | None = _opt(
        None,
        "BEIR folder (with qrels/train.tsv) to train the offline default reranker from when no "
        "hub is reachable",
    )
    # The bearer token for writes and admin calls. No flag: every local user can read a
    # process's arguments; give it by file (auth_token_file), environment or the TOML file.
    auth_token: str = _opt("", "", flag=None)
    auth_token_file: Path | None = _opt(
        None,
        "file holding the bearer token required for writes and admin calls (or set "
        "TWOSTAGE_AUTH_TOKEN; a token is never taken on the command line)",
    )
    auth_reads: bool = _opt(
        False,
        "require the bearer token for reads too (Embed, Rerank, Search, ...), both transports; "
        "health, GetInfo and metrics stay open",
    )
    http_listen: str = _opt(
        "127.0.0.1:8080",
        "HOST:PORT for the HTTP APIs (OpenAI, Cohere, Jina, TEI, every RPC as JSON), same "
        "process and batches as gRPC; off = none",
    )
    tls_cert: Path | None = _opt(None, "PEM certificate chain (with --tls-key), both transports")
    tls_key: Path | None = _opt(None, "PEM private key (with --tls-cert)")
    skip_bundle_verify: bool = _opt(
        False, "skip the bundles' hash check at start (faster for huge bundles; not recommended)"
    )

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
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


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
        if raw is not None and raw != "":
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
