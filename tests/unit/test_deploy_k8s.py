"""deploy/k8s/: the manifests parse, reference each other consistently and match the image.

No cluster is reachable here, so the checks are the ones a broken apply would trip over: names that
must match (claim, ports, selectors, probe services) and the values that must agree with
Dockerfile.gpu and the server (ports, user, grace period, GPU request).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROTO = ROOT / "protos" / "twostage" / "v1" / "twostage.proto"


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, from every resource file the kustomization lists."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        text = (K8S / resource).read_text(encoding="utf-8")
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{key} defined twice"
                found[key] = doc
    return found


@pytest.fixture(scope="module")
def deployment(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    deployments = [o for (kind, _), o in objects.items() if kind == "Deployment"]
    assert len(deployments) == 1
    return deployments[0]


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def test_every_manifest_is_listed_in_the_kustomization(
    kustomization: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert set(objects) == {
        ("Deployment", "twostage"),
        ("PersistentVolumeClaim", "twostage-data"),
        ("Service", "twostage"),
        ("Service", "twostage-headless"),
    }
    images = {image["name"] for image in kustomization.get("images", [])}
    containers = objects[("Deployment", "twostage")]["spec"]["template"]["spec"]["containers"]
    assert {c["image"] for c in containers} <= images


def test_one_gpu_per_pod(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    # Extended resources need requests == limits when both are given.
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    assert _env(container)["TWOSTAGE_DEVICE"] == "cuda"


def test_probes_are_native_grpc_health_checks_on_the_grpc_port(container: dict[str, Any]) -> None:
    services = {f"twostage.v1.{m}" for m in re.findall(r"^service (\w+)", PROTO.read_text(), re.M)}
    assert {"twostage.v1.Inference", "twostage.v1.Search"} <= services
    grpc_port = _ports(container)["grpc"]
    assert int(_env(container)["TWOSTAGE_LISTEN"].rsplit(":", 1)[1]) == grpc_port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = container[probe]["grpc"]
        assert spec["port"] == grpc_port, probe
        # "" is the whole server; any other name must be a service the server registers.
        assert spec.get("service", "") in services | {""}, probe
    assert container["readinessProbe"]["grpc"]["service"] in services


def test_data_dir_is_the_persistent_volume(
    deployment: dict[str, Any],
    container: dict[str, Any],
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    data_volume = volumes[mounts[_env(container)["TWOSTAGE_DATA_DIR"]]]
    claim = data_volume["persistentVolumeClaim"]["claimName"]
    pvc = objects[("PersistentVolumeClaim", claim)]
    assert pvc["spec"]["resources"]["requests"]["storage"]
    if "ReadWriteOnce" in pvc["spec"]["accessModes"]:
        # One writer per data dir: a second replica or a rolling update would need the same volume.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_services_select_the_pods_and_name_real_ports(
    deployment: dict[str, Any],
    container: dict[str, Any],
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = _ports(container)
    services = [o for (kind, _), o in objects.items() if kind == "Service"]
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, port
    headless = objects[("Service", "twostage-headless")]
    assert headless["spec"]["clusterIP"] == "None"  # DNS lists pod IPs: client-side round_robin
    assert [p["targetPort"] for p in headless["spec"]["ports"]] == ["grpc"]


def _runtime_stage_match(pattern: str) -> str:
    """First group of ``pattern`` in the last (runtime) stage of Dockerfile.gpu."""
    runtime = (ROOT / "Dockerfile.gpu").read_text(encoding="utf-8").rsplit("\nFROM ", 1)[1]
    match = re.search(pattern, runtime, re.M)
    assert match is not None, f"{pattern} not in the runtime stage of Dockerfile.gpu"
    return match.group(1)


def test_pod_matches_the_image(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    exposed = {int(p) for p in _runtime_stage_match(r"^EXPOSE (.+)$").split()}
    assert set(_ports(container).values()) == exposed
    uid = int(_runtime_stage_match(r"^USER (\d+)"))
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == uid
    assert security["fsGroup"] == uid  # the PVC must be writable by the server's user
    grace = float(_env(container)["TWOSTAGE_GRACE_PERIOD"])
    assert grace == float(_runtime_stage_match(r"TWOSTAGE_GRACE_PERIOD=([\d.]+)"))
    # The kubelet's SIGKILL must come after the server's drain (and its index snapshot).
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
