#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by .ci/slurm-up.sh (slurmd, slurmctld, munged).
# Safe to run when nothing is running.
set -uo pipefail

log() { echo "[slurm-down] $*" >&2; }

if command -v scancel >/dev/null 2>&1; then
    scancel --full --quiet --state=PENDING 2>/dev/null || true
    scancel --full --quiet 2>/dev/null || true
fi

stop_pidfile() {
    local name="$1" pidf="$2"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        local pid; pid="$(cat "$pidf")"
        log "stopping $name ($pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid
exit 0
