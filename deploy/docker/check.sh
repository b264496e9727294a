#!/usr/bin/env bash
# Build Dockerfile.gpu for real and run the image on the CPU provider, without any image registry.
#
#   bash deploy/docker/check.sh            (what `make docker-check` runs)
#
# 1. Installs Debian's docker.io and debootstrap if missing (apt).
# 2. Starts a private dockerd: own socket, data and exec roots under a temp dir, no bridge, no iptables,
#    no IP forwarding or masquerading, so the host's network setup is left as it was.
# 3. Makes the base image local/debian:bookworm with debootstrap (minbase) from the mirror this
#    machine's apt uses, plus the host CA bundle (outgoing TLS may be intercepted), and caches the
#    rootfs tarball between runs.
# 4. Builds Dockerfile.gpu with both bases overridden to that image and torch from the local CPU wheel
#    (`pip download torch==2.13.0`, passed in through the build context), BuildKit, --network host.
# 5. Runs the image with TWOSTAGE_DEVICE=cpu on loopback ports, waits for its HEALTHCHECK to pass,
#    probes each service, calls twostage.v1.Inference/Embed from the host (schema by reflection),
#    reads /metrics, then stops it with SIGTERM and expects a clean exit within the grace period.
# 6. Stops the daemon by its pid, unmounts and removes the temp dir, and checks that the network
#    links and iptables rules are the same as before.
#
# Exit 0 also when the engine cannot run here (not root, no kernel support): it says "SKIP" and why.
# Environment: TWOSTAGE_DOCKER_CACHE (cache dir, default ~/.cache/twostage/docker-check),
# TWOSTAGE_DOCKER_HEALTH_TIMEOUT (seconds to wait for healthy, default 300), PYTHON (a Python with
# grpcio and grpcio-reflection; default the repo's .venv).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/deploy/docker"
SUITE=bookworm
BASE_IMAGE="local/debian:$SUITE"
IMAGE="twostage-gpu:check"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CACHE="${TWOSTAGE_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/twostage/docker-check}"
HEALTH_TIMEOUT="${TWOSTAGE_DOCKER_HEALTH_TIMEOUT:-300}"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
WHEELHOUSE_REL=".tmp/docker-wheelhouse"
WHEELHOUSE="$REPO/$WHEELHOUSE_REL"

START=$SECONDS
exec {OUT_FD}>&1 {ERR_FD}>&2
WORK=""
DISK=""
DOCKERD_PID=""
CONTAINER=""
NET_BEFORE=""

say() { printf '[docker-check %4ss] %s\n' "$((SECONDS - START))" "$*"; }
skip() { say "SKIP: $*"; exit 0; }
die() { say "FAIL: $*"; exit 1; }

dk() { DOCKER_CONFIG="$WORK/client" /usr/bin/docker --host "unix://$WORK/docker.sock" "$@"; }

net_state() {
    # Link names and iptables rules: what a docker daemon would add (docker0, veths, DOCKER chains).
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
    if command -v iptables >/dev/null 2>&1; then
        for table in filter nat; do iptables -t "$table" -S 2>/dev/null | sed "s/^/$table /"; done
    fi
}

container_leftovers() {
    # Processes whose root filesystem is one of our daemon's overlay layers, i.e. processes of its
    # containers (a build step can outlive a daemon stopped mid-build). Nothing else can match:
    # the "/" mount of every other process is not under our temp dir.
    local m pid
    for m in /proc/[0-9]*/mountinfo; do
        pid="${m#/proc/}"; pid="${pid%/mountinfo}"
        [ "$pid" -gt 1 ] && [ "$pid" != "$$" ] || continue
        awk -v w="$WORK/" '$5 == "/" && index($0, w) { found = 1 } END { exit !found }' "$m" \
            2>/dev/null && echo "$pid"
    done
}

cleanup() {
    local rc=$?
    set +e
    # A trap can fire inside a redirected function call (dk build >log): talk to the real outputs.
    exec 1>&"$OUT_FD" 2>&"$ERR_FD"
    if [ -n "$CONTAINER" ] && [ -n "$DOCKERD_PID" ]; then dk rm -f "$CONTAINER" >/dev/null 2>&1; fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            say "dockerd (pid $DOCKERD_PID) did not stop on SIGTERM; killing it"
            kill -KILL "$DOCKERD_PID"
        fi
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        local leftovers
        leftovers="$(container_leftovers | tr '\n' ' ')"
        if [ -n "$leftovers" ]; then
            say "stopping processes left in our containers: $leftovers"
            # shellcheck disable=SC2086  # a list of pids
            kill -KILL $leftovers 2>/dev/null
            for _ in $(seq 1 40); do [ -z "$(container_leftovers)" ] && break; sleep 0.25; done
        fi
        # Mounts the daemon may have left (overlay layers, shm, netns), deepest first, then the
        # scratch filesystem itself.
        awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m"
        done
        if [ -f "$WORK/disk.img" ] && command -v losetup >/dev/null; then
            losetup -j "$WORK/disk.img" | cut -d: -f1 | while read -r dev; do losetup -d "$dev"; done
        fi
        rm -rf "$WORK"
    fi
    rm -rf "$WHEELHOUSE"
    [ -z "$WORK" ] || say "cleaned up (daemon stopped, mounts and temp files removed)"
    if [ -n "$NET_BEFORE" ] && [ "$(net_state)" != "$NET_BEFORE" ]; then
        say "FAIL: network links or iptables rules changed during the check:"
        diff <(echo "$NET_BEFORE") <(net_state)
        rc=1
    fi
    exit "$rc"
}

# --- 1. can the engine run here? ------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || skip "a docker engine needs Linux (this is $(uname -s))"
[ "$(id -u)" = 0 ] || skip "running a private dockerd needs root (uid is $(id -u))"
if ! { command -v dockerd >/dev/null && [ -x /usr/bin/docker ] && command -v debootstrap >/dev/null; }
then
    command -v apt-get >/dev/null || skip "docker.io and debootstrap are missing and there is no apt-get"
    say "installing docker.io and debootstrap (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null; }; then
        skip "apt-get could not install docker.io and debootstrap"
    fi
fi
[ -x /usr/bin/docker ] || skip "Debian's docker client (/usr/bin/docker, with BuildKit) is missing"

NET_BEFORE="$(net_state)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tsdock.XXXXXX")"
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/disk" "$WORK/exec" "$WORK/client" "$CACHE"
echo '{}' >"$WORK/daemon.json"
# Image layers and unpacked trees go on a loop-mounted scratch filesystem: removing a tree of 100k
# files from a disk mounted with `discard` takes minutes, unmounting and deleting one file does not.
# It is thrown away at the end, so it needs no journal and no write barriers (fsync-heavy dpkg).
DISK="$WORK/disk"
truncate -s "${TWOSTAGE_DOCKER_DISK:-40G}" "$WORK/disk.img"
if mkfs.ext4 -q -F -O ^has_journal -E nodiscard "$WORK/disk.img" >/dev/null 2>&1 \
    && mount -o loop,noatime,barrier=0 "$WORK/disk.img" "$DISK" 2>/dev/null; then
    say "scratch filesystem: $(df -h --output=size "$DISK" | tail -n 1 | tr -d ' ') (loop, sparse)"
else
    rm -f "$WORK/disk.img"
    say "no loop mount here: layers go to $DISK directly (cleanup will be slower)"
fi

# --- 2. private daemon ----------------------------------------------------------------------------
say "starting dockerd on $WORK/docker.sock"
dockerd \
    --config-file "$WORK/daemon.json" \
    --host "unix://$WORK/docker.sock" \
    --data-root "$DISK/docker" \
    --exec-root "$WORK/exec" \
    --pidfile "$WORK/dockerd.pid" \
    --containerd-namespace twostage-check \
    --containerd-plugins-namespace twostage-check-plugins \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false --userland-proxy=false \
    >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 120); do
    dk version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
done
if ! dk version >/dev/null 2>&1; then
    tail -n 20 "$WORK/dockerd.log" >&2
    skip "dockerd did not start here (log above)"
fi
say "dockerd $(dk version -f '{{.Server.Version}}') up (pid $DOCKERD_PID, storage $(dk info -f '{{.Driver}}'))"

# --- 3. base image ----------------------------------------------------------------------------------
ROOTFS_TAR="$CACHE/debian-$SUITE-minbase.tar"
if [ ! -s "$ROOTFS_TAR" ]; then
    MIRROR="$("$PYTHON" "$HERE/apt_mirror.py" "$SUITE" 2>/dev/null || true)"
    say "debootstrap --variant=minbase $SUITE from ${MIRROR:-the default mirror of debootstrap}"
    mkdir -p "$DISK/rootfs"
    # shellcheck disable=SC2086  # MIRROR is one word or nothing
    if ! debootstrap --variant=minbase "$SUITE" "$DISK/rootfs" $MIRROR >"$WORK/debootstrap.log" 2>&1
    then
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    tar -C "$DISK/rootfs" -cf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
else
    say "base rootfs from cache: $ROOTFS_TAR"
fi
CA_BUNDLE=""
for candidate in "${SSL_CERT_FILE:-}" "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt \
    /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -n "$candidate" ] && [ -s "$candidate" ]; then CA_BUNDLE="$candidate"; break; fi
done
mkdir -p "$DISK/base"
tar -C "$DISK/base" -xf "$ROOTFS_TAR"
CHANGES=()
if [ -n "$CA_BUNDLE" ]; then
    # Where OpenSSL looks, and a copy that installing Debian's ca-certificates in the build (it
    # regenerates the first) keeps and merges back; pip and Python point at the copy.
    install -D -m 0644 "$CA_BUNDLE" "$DISK/base/etc/ssl/certs/ca-certificates.crt"
    install -D -m 0644 "$CA_BUNDLE" "$DISK/base/usr/local/share/ca-certificates/host-bundle.crt"
    for var in SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE; do
        CHANGES+=(--change "ENV $var=/usr/local/share/ca-certificates/host-bundle.crt")
    done
fi
# dpkg syncs every file it writes; in a throw-away build that only costs time.
echo force-unsafe-io >"$DISK/base/etc/dpkg/dpkg.cfg.d/twostage-check-unsafe-io"
tar -C "$DISK/base" -c . | dk import "${CHANGES[@]}" - "$BASE_IMAGE" >/dev/null
if ! dk run --rm --network none "$BASE_IMAGE" true >"$WORK/run-probe.log" 2>&1; then
    cat "$WORK/run-probe.log" >&2
    skip "the engine cannot run containers here (above)"
fi
say "base image $BASE_IMAGE ready (CA bundle: ${CA_BUNDLE:-none})"

# --- 4. build ---------------------------------------------------------------------------------------
# Every wheel the build needs, fetched by this machine's pip (its indexes, its local torch CPU wheel)
# into a cache that later runs reuse, then passed in through the build context (WHEELHOUSE): the
# build installs from it alone. Source-only packages (hnswlib) become portable wheels here.
WHEEL_CACHE="$CACHE/wheels"
mkdir -p "$WHEEL_CACHE"
"$PYTHON" "$HERE/runtime_requirements.py" "$REPO/pyproject.toml" --extra export >"$WORK/export.txt"
"$PYTHON" "$HERE/runtime_requirements.py" "$REPO/pyproject.toml" --extra gpu >"$WORK/runtime.txt"
# The set is fetched again only when the requirements change (a stamp of them sits in the cache).
STAMP="$(cat "$WORK/export.txt" "$WORK/runtime.txt" "$REPO/requirements.lock" \
    <(echo "torch==$TORCH_VERSION") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$WHEEL_CACHE/.stamp" 2>/dev/null)" = "$STAMP" ]; then
    say "wheels from cache: $WHEEL_CACHE (requirements unchanged)"
else
    say "collecting wheels into $WHEEL_CACHE (torch==$TORCH_VERSION from where pip finds it here)"
    for requirements in "$WORK/export.txt" "$WORK/runtime.txt"; do
        # The image installs with requirements.lock as constraints: fetch those very versions.
        if ! "$PYTHON" -m pip download --quiet --quiet --find-links "$WHEEL_CACHE" \
            --dest "$WHEEL_CACHE" -c "$REPO/requirements.lock" "torch==$TORCH_VERSION" \
            "setuptools>=68" wheel -r "$requirements" >"$WORK/pip.log" 2>&1; then
            tail -n 20 "$WORK/pip.log" >&2
            die "pip could not collect the wheels of $(basename "$requirements") (above)"
        fi
    done
fi
for sdist in "$WHEEL_CACHE"/*.tar.gz "$WHEEL_CACHE"/*.zip; do
    [ -f "$sdist" ] || continue
    say "building a wheel of $(basename "$sdist")"
    HNSWLIB_NO_NATIVE=1 "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEEL_CACHE" "$sdist" \
        >"$WORK/pip.log" 2>&1 || { tail -n 20 "$WORK/pip.log" >&2; die "cannot build $sdist"; }
    rm -f "$sdist"
done
echo "$STAMP" >"$WHEEL_CACHE/.stamp"
rm -rf "$WHEELHOUSE"
mkdir -p "$WHEELHOUSE"
cp -l "$WHEEL_CACHE"/*.whl "$WHEELHOUSE"/ 2>/dev/null || cp "$WHEEL_CACHE"/*.whl "$WHEELHOUSE"/
say "building $IMAGE from $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels ($(du -sh "$WHEELHOUSE" | cut -f1))"
BUILD_START=$SECONDS
if ! DOCKER_BUILDKIT=1 dk build \
    --network host \
    --progress plain \
    --file "$REPO/Dockerfile.gpu" \
    --build-arg "EXPORT_BASE=$BASE_IMAGE" \
    --build-arg "RUNTIME_BASE=$BASE_IMAGE" \
    --build-arg "TORCH_SPEC=torch==$TORCH_VERSION" \
    --build-arg "WHEELHOUSE=$WHEELHOUSE_REL" \
    --tag "$IMAGE" \
    "$REPO" >"$WORK/build.log" 2>&1; then
    cp "$WORK/build.log" "$CACHE/last-build.log"
    tail -n 80 "$WORK/build.log" >&2
    die "docker build failed (last lines above; whole log: $CACHE/last-build.log)"
fi
cp "$WORK/build.log" "$CACHE/last-build.log"
# The steps that took a second or more, with their times.
awk '/^#[0-9]+ \[/ && !($1 in step) { line = $0; sub(/^#[0-9]+ /, "", line); step[$1] = line }
     /^#[0-9]+ DONE / && ($1 in step) && $3 + 0 >= 1 {
         printf "    %6.1fs  %s\n", $3, substr(step[$1], 1, 100) }' "$WORK/build.log"
grep -E '^#[0-9]+ [0-9.]+ (onnxruntime [0-9]|adding bundle|keeping the exported)' "$WORK/build.log" \
    | sed -E 's/^#[0-9]+ [0-9.]+ /    /' || true
say "built $IMAGE in $((SECONDS - BUILD_START))s, $(dk image inspect -f '{{.Size}}' "$IMAGE" \
    | awk '{printf "%.0f MB", $1 / 1e6}')"
rm -rf "$WHEELHOUSE"

# --- 5. run -----------------------------------------------------------------------------------------
read -r PORT METRICS_PORT <<<"$("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')"
CONTAINER="twostage-check-$$"
say "running $IMAGE on the CPU provider (gRPC 127.0.0.1:$PORT, metrics $METRICS_PORT)"
# Locked down like the Kubernetes example: read-only root, /tmp in memory, no capabilities.
dk run --detach --name "$CONTAINER" --network host \
    --env "TWOSTAGE_LISTEN=127.0.0.1:$PORT" \
    --env "TWOSTAGE_METRICS_PORT=$METRICS_PORT" \
    --env TWOSTAGE_DEVICE=cpu \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --health-interval 2s --health-start-period "${HEALTH_TIMEOUT}s" \
    --stop-timeout 30 \
    "$IMAGE" >/dev/null

show_logs() { dk logs --tail 60 "$CONTAINER" 2>&1 | sed 's/^/    | /' >&2; }

wait_healthy() {
    # Poll the container's own HEALTHCHECK state until it passes, the container dies, or time runs out.
    local started=$SECONDS state
    while :; do
        state="$(dk inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' \
            "$CONTAINER")"
        case "$state" in
            "running healthy") break ;;
            running*) ;;
            *) show_logs; die "container stopped before it became healthy (state: $state)" ;;
        esac
        if [ $((SECONDS - started)) -ge "$HEALTH_TIMEOUT" ]; then
            show_logs
            dk inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$CONTAINER" >&2
            die "not healthy after ${HEALTH_TIMEOUT}s"
        fi
        sleep 1
    done
    say "HEALTHCHECK passed after $((SECONDS - started))s"
}

call() {
    # call METHOD JSON: the reply as JSON on stdout, or the check fails with the server's log.
    "$PYTHON" "$HERE/grpc_call.py" "127.0.0.1:$PORT" "$1" "$2" || { show_logs; die "$1 failed"; }
}

field() {
    # field JSON EXPR: evaluate a Python expression over the parsed reply `r`.
    "$PYTHON" -c "import json, sys; r = json.loads(sys.argv[1]); print($2)" "$1"
}

stop_cleanly() {
    local started=$SECONDS code
    dk stop "$CONTAINER" >/dev/null
    code="$(dk inspect -f '{{.State.ExitCode}}' "$CONTAINER")"
    if [ "$code" != 0 ]; then
        show_logs
        die "container exited with $code after SIGTERM (expected a clean drain, exit 0)"
    fi
    say "SIGTERM: clean exit in $((SECONDS - started))s"
}

wait_healthy
for service in "" twostage.v1.Inference twostage.v1.Info twostage.v1.Search twostage.v1.Collections; do
    if answer="$(dk exec "$CONTAINER" /opt/venv/bin/python /opt/twostage/healthcheck.py \
        --service "$service" 2>&1)"; then
        say "  $answer"
    elif [ -z "$service" ] || [ "$service" = twostage.v1.Inference ]; then
        show_logs; die "$answer"
    else
        say "  $answer (not required: no reranker bundle in the image?)"
    fi
done

USER_ID="$(dk exec "$CONTAINER" id -u)"
[ "$USER_ID" != 0 ] || die "the server runs as root in the container"
say "server runs as uid $USER_ID"

REPLY="$(call twostage.v1.Inference/Embed \
    '{"texts": ["hi", "a container check of the two-stage retrieval server"]}')"
SUMMARY="$("$PYTHON" "$HERE/embed_reply.py" --count 2 "$REPLY" 2>&1)" || die "$SUMMARY: $REPLY"
say "$SUMMARY"

METRIC_LINES="$("$PYTHON" -c '
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
print(sum(1 for line in body.splitlines() if line.startswith("twostage_")))' "$METRICS_PORT")" \
    || die "no /metrics on port $METRICS_PORT"
[ "$METRIC_LINES" -gt 0 ] || die "/metrics has no twostage_ series"
say "/metrics serves $METRIC_LINES twostage_ samples"

# The data volume: written by the non-root server, kept across a SIGTERM drain and a restart.
call twostage.v1.Collections/CreateCollection '{"name": "docker_check"}' >/dev/null
call twostage.v1.Collections/Upsert '{"collection": "docker_check", "documents": [
    {"id": "gpu", "text": "An inference server batches requests so the GPU stays busy."},
    {"id": "cat", "text": "Cats sleep for most of the day."}]}' >/dev/null
HIT="$(field "$(call twostage.v1.Search/Search \
    '{"collection": "docker_check", "query": "batching model inference on GPUs", "top_k": 1}')" \
    'r["hits"][0]["id"]')"
[ "$HIT" = gpu ] || die "Search ranked $HIT first, expected the GPU document"
say "collection written to the data volume; Search finds the right document"

stop_cleanly
dk start "$CONTAINER" >/dev/null
wait_healthy
COUNT="$(field "$(call twostage.v1.Collections/DescribeCollection '{"name": "docker_check"}')" \
    'r["collection"].get("count", 0)')"
[ "$COUNT" = 2 ] || die "after a restart the collection has $COUNT documents, expected 2"
say "after a restart: the collection is back with $COUNT documents"
stop_cleanly
say "OK: image built, healthy, Embed and Search answered, data kept, drained on SIGTERM"
