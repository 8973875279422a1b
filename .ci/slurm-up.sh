#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (no systemd): munged, slurmctld, slurmd.
#
# Idempotent: installs the Debian packages only when missing, rewrites the config,
# restarts nothing that already answers. Must run as root. Takes ~10 s after install.
# Usage: bash .ci/slurm-up.sh        (tear down with .ci/slurm-down.sh)
set -euo pipefail

log() { echo "[slurm-up] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root"; exit 1
fi

need_install=0
for bin in munged slurmctld slurmd sinfo sbatch; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
    log "installing munge slurmctld slurmd slurm-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
# RealMemory (MB) from slurmd -C, minus a margin so the node never drains for "low RealMemory".
DETECTED_MB="$(/usr/sbin/slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)"
if [ -z "$DETECTED_MB" ]; then
    DETECTED_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
fi
MARGIN_MB=$(( DETECTED_MB / 10 > 512 ? DETECTED_MB / 10 : 512 ))
REAL_MB=$(( DETECTED_MB - MARGIN_MB ))

STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGDIR=/var/log/slurm
mkdir -p /etc/slurm "$STATE" "$SPOOL" "$LOGDIR" /run/munge /var/lib/munge /var/log/munge /etc/munge

cat > /etc/slurm/slurm.conf.new <<EOF
# Written by .ci/slurm-up.sh (fmri-pain CI): single-node cluster on $HOST.
ClusterName=fmripain
SlurmctldHost=$HOST
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
NodeName=$HOST CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf 2>/dev/null; then
    mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
    config_changed=1
else
    rm -f /etc/slurm/slurm.conf.new
    config_changed=0
fi

# munge: key owned by munge, daemon running as munge.
if [ ! -s /etc/munge/munge.key ]; then
    if [ -x /usr/sbin/mungekey ]; then
        /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$config_changed" = 1 ]; then
    # A new config needs fresh daemons (and a clean state, so an old node definition does not linger).
    for pidf in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidf"; then kill "$(cat "$pidf")" 2>/dev/null || true; fi
    done
    sleep 1
    rm -rf "${STATE:?}"/*
fi

if ! running /run/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld -i
fi
if ! running /run/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# Wait until the node is idle (or mixed/allocated: usable).
for i in $(seq 120); do
    state="$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -1 || true)"
    case "$state" in
        idle*|mixed*|allocated*|completing*) log "node $HOST is $state (CPUs=$CPUS RealMemory=${REAL_MB}MB)"; exit 0 ;;
        down*|drain*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
log "node $HOST did not become idle; sinfo says: $(sinfo -N -l 2>&1 | tail -n +2)"
tail -n 20 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
exit 1
