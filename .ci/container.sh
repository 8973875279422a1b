#!/usr/bin/env bash
# Build the Dockerfile with podman and check the image on a small simulated trial.
#
# For a Debian 12 machine (run as root) that reaches package registries only
# (deb.debian.org, PyPI) and no container registry, hence no `FROM python:...`:
#   1. apt: podman and debootstrap;
#   2. a minimal Debian bookworm base made by debootstrap, `podman import`ed;
#   3. `podman build` of the Dockerfile on that base (BASE_IMAGE build argument);
#   4. in the image, as its non-root USER 1000 and without network:
#      `fmri-pain --version`, then participant + group on a simulated trial with
#      the output folder bind-mounted; the same two levels with the host's venv;
#      the maps and tables of both must agree (tests/support/compare_outputs.py).
# Every phase is timed. Nothing is cached: podman's storage lives in a scratch
# folder that is deleted at exit (keep it with CONTAINER_KEEP=1).
#
#   bash .ci/container.sh            # from the repository, after `make install`
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HOST_BIN=${HOST_BIN:-$ROOT/.venv/bin}           # the host install compared against
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# CONTAINER_WORK: reuse a folder kept by CONTAINER_KEEP=1 (its base image is
# then not made again); by default a fresh one, as CI has
WORK=${CONTAINER_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/fmri-pain-container.XXXXXX")}
BASE_IMAGE=localhost/debian-base:bookworm
IMAGE=localhost/fmri-pain:ci
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}  # trusted by pip in the build
ATOL=${CONTAINER_ATOL:-1e-5}                    # float tolerance of the map comparison
# OpenBLAS picks its kernels by CPU at run time, and the image's pick can differ from
# the host's on the same machine (seen in CI: first-level z maps 3.7e-5 apart, exactly
# the difference between OpenBLAS's SkylakeX and Haswell kernels, group maps further):
# both runs get the same core type, Haswell (AVX2 + FMA) where the CPU has them.
# CONTAINER_BLAS_CORETYPE overrides it (empty: each side detects its own).
if [[ -z "${CONTAINER_BLAS_CORETYPE+set}" ]] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    CONTAINER_BLAS_CORETYPE=Haswell
fi
BLAS_CORETYPE=${CONTAINER_BLAS_CORETYPE:-}

declare -a TIMINGS=()
phase() {  # phase NAME COMMAND...: run it, record and print its wall time
    local name=$1 start=$SECONDS
    shift
    echo "[container] --- $name"
    "$@"
    TIMINGS+=("$(printf '%-22s %5d s' "$name" $((SECONDS - start)))")
    echo "[container] $name: $((SECONDS - start)) s"
}

# podman's choices for this sandbox (a VM without systemd, cgroup v1 with the
# unified hierarchy mounted too, root without CAP_SYS_RESOURCE); all found by trial:
# - --root/--runroot in $WORK: a private store, so nothing is cached between runs
#   and other podman users of the machine are not touched;
# - runtime runc: crun refuses cgroup v1 "hybrid" mode ("drop all controllers
#   from cgroupv2"), even with --cgroups=disabled;
# - cgroup manager cgroupfs, events to a file: systemd and journald do not run;
# - default ulimits lowered to 16384 files / processes: podman's defaults for
#   root (1048576 ...) and even the host's own limits fail with "setrlimit:
#   operation not permitted" here (no CAP_SYS_RESOURCE); 16384 is plenty for
#   the two dask workers of the check;
# - network backend netavark (podman 4 otherwise falls back to CNI, whose
#   plugins are not installed); builds use --network=host, runs --network=none;
# - storage: overlay when the kernel lets us mount overlayfs on $WORK (root on
#   ext4 here: it does), else vfs (works anywhere; a full copy per layer, slower).
export CONTAINERS_CONF=$WORK/containers.conf
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run")

cleanup() {
    local status=$?
    if ((${#TIMINGS[@]})); then
        echo "[container] phase timings:"
        printf '[container]   %s\n' "${TIMINGS[@]}"
    fi
    if [[ "${CONTAINER_KEEP:-0}" == 1 ]]; then
        echo "[container] kept $WORK (podman: ${PODMAN[*]})"
    else
        if command -v podman >/dev/null && [[ -d "$WORK/storage" ]]; then
            "${PODMAN[@]}" rm --all --force >/dev/null 2>&1 || true
            "${PODMAN[@]}" rmi --all --force >/dev/null 2>&1 || true
        fi
        # the store's own mounts (overlay keeps its folder bind-mounted), deepest first
        awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

install_tools() {
    export DEBIAN_FRONTEND=noninteractive
    # the lock timeout: other apt runs on a shared machine finish first
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # runc: the OCI runtime (see above); netavark: the network backend
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        podman runc conmon netavark debootstrap ca-certificates >/dev/null
    podman --version
}

choose_storage() {
    local probe=$WORK/overlay-probe
    mkdir -p "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
            "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        DRIVER=overlay
    else
        DRIVER=vfs
    fi
    rm -rf "$probe"
    PODMAN+=(--storage-driver "$DRIVER")
    echo "[container] storage driver: $DRIVER"
}

make_base() {
    local rootfs=$WORK/rootfs
    if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
        echo "[container] $BASE_IMAGE exists in $WORK/storage: kept"
        return 0
    fi
    rm -rf "$rootfs"
    # minbase + what the Dockerfile needs: python3 (bookworm: 3.11) with venv;
    # passwd (useradd) is in minbase already
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; return 1; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" --numeric-owner -c . \
        | "${PODMAN[@]}" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
    rm -rf "$rootfs"
    "${PODMAN[@]}" run --rm --network=none "$BASE_IMAGE" python3 --version
}

build_image() {
    # pip in the build gets a global config (/etc/pip.conf) mounted for the RUN
    # steps only, not copied into a layer, with
    # - the host venv's versions of every dependency as constraints, so the two
    #   runs compare the same numerical code;
    # - the host's CA bundle: where HTTPS goes through an intercepting proxy (this
    #   sandbox) its certificate is trusted there, not by pip's own certifi.
    "$HOST_BIN/python" -m pip freeze --exclude-editable --exclude fmri-pain >"$WORK/constraints.txt"
    printf '[global]\nconstraint = /run/fmri-pain-build/constraints.txt\ncert = /run/fmri-pain-build/ca.crt\n' \
        >"$WORK/pip.conf"
    cp "$HOST_CA" "$WORK/ca.crt"
    # --network=host: pip needs PyPI, and the default bridge needs iptables;
    # --isolation chroot: RUN steps in a chroot, not through the OCI runtime
    # (no cgroups or rlimits to set up; works in containers-in-containers too)
    "${PODMAN[@]}" build --network=host --isolation chroot \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -v "$WORK/pip.conf:/etc/pip.conf:ro" \
        -v "$WORK/constraints.txt:/run/fmri-pain-build/constraints.txt:ro" \
        -v "$WORK/ca.crt:/run/fmri-pain-build/ca.crt:ro" \
        -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1 \
        || { tail -40 "$WORK/build.log"; return 1; }
    tail -3 "$WORK/build.log"
    "${PODMAN[@]}" image ls
}

check_version() {
    local version user
    version=$("${PODMAN[@]}" run --rm --network=none "$IMAGE" --version)
    user=$("${PODMAN[@]}" run --rm --network=none --entrypoint id "$IMAGE" -u)
    echo "[container] image: '$version' as uid $user"
    [[ "$version" == "fmri-pain $("$HOST_BIN/fmri-pain" --version | cut -d' ' -f2)" ]] \
        || { echo "[container] image version differs from the host's"; return 1; }
    [[ "$user" == 1000 ]] || { echo "[container] the image runs as uid $user, not 1000"; return 1; }
    # the BLAS kernels each side picks by itself (the runs below use ${BLAS_CORETYPE:-those})
    local blas='import numpy, scipy.linalg; from threadpoolctl import threadpool_info
print(*sorted({i["internal_api"] + ":" + str(i.get("architecture")) for i in threadpool_info()}))'
    echo "[container] BLAS detected: host $("$HOST_BIN/python" -c "$blas"), image $("${PODMAN[@]}" run --rm --network=none --entrypoint python "$IMAGE" -c "$blas")"
    echo "[container] both runs below: OPENBLAS_CORETYPE=${BLAS_CORETYPE:-unset (each its own)}"
}

simulate() {
    # a small trial: 4 subjects (one per Williams sequence and one more), 6 mm,
    # 60 volumes, fMRIPrep-style derivatives (the participant level skips
    # preprocessing), and a spec with few permutations
    rm -rf "$WORK/sim" "$WORK/out-image" "$WORK/out-host" "$WORK/work-host"
    "$HOST_BIN/fmri-pain" simulate "$WORK/sim" --subjects 4 --seed 5 --volumes 60 \
        --voxel-size 6 --derivatives -q
    cat >"$WORK/spec.yaml" <<'EOF'
# .ci/container.sh: few permutations, so the check stays in seconds
inference:
  n_perm: 50
pathways:
  n_permutations: 10
  n_bootstrap: 200
EOF
}

run_in_image() {
    install -d -o 1000 -g 1000 "$WORK/out-image"
    local level
    for level in participant group; do
        "${PODMAN[@]}" run --rm --network=none ${BLAS_CORETYPE:+-e "OPENBLAS_CORETYPE=$BLAS_CORETYPE"} \
            -v "$WORK/sim/bids:/data:ro" \
            -v "$WORK/sim/derivatives/fmriprep:/fmriprep:ro" \
            -v "$WORK/spec.yaml:/spec.yaml:ro" \
            -v "$WORK/out-image:/out" \
            "$IMAGE" /data /out "$level" --derivatives /fmriprep --spec /spec.yaml \
            --work-dir /tmp/work --n-workers 2 --threads-per-worker 1 -q
    done
}

run_on_host() {
    local level
    for level in participant group; do
        ${BLAS_CORETYPE:+env "OPENBLAS_CORETYPE=$BLAS_CORETYPE"} \
            "$HOST_BIN/fmri-pain" "$WORK/sim/bids" "$WORK/out-host" "$level" \
            --derivatives "$WORK/sim/derivatives/fmriprep" --spec "$WORK/spec.yaml" \
            --work-dir "$WORK/work-host" --n-workers 2 --threads-per-worker 1 -q
    done
}

compare() {
    # logs/ holds run times; tables record absolute paths of maps (/out/... in the image)
    "$HOST_BIN/python" -m tests.support.compare_outputs --atol "$ATOL" --exclude 'logs/*' \
        --path-alias "/out=$WORK/out-host" "$WORK/out-host" "$WORK/out-image"
}

phase "install podman" install_tools
choose_storage
phase "debootstrap base" make_base
phase "podman build" build_image
phase "version, non-root" check_version
phase "simulate trial" simulate
phase "image: both levels" run_in_image
phase "host: both levels" run_on_host
phase "compare outputs" compare
echo "[container] OK: the image's maps equal the host's (|difference| <= $ATOL)"
