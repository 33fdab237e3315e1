#!/usr/bin/env bash
# A real cluster test: install Debian's SLURM on this machine, start a one-node cluster, run the
# tiny study through profiles/slurm (every non-local job via sbatch), check SLURM's own records,
# compare the tables with a local run, and stop the daemons.
#
#   sudo bash tests/cluster/slurm_test.sh          (needs root for apt and the daemons)
#
# Environment: PYTHON (default .venv/bin/python), KEEP=1 keeps the scratch folder, LOCAL_RUN=<dir>
# reuses a finished local run of the tiny study as the reference instead of making one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SNAKEMAKE=$(dirname "$PYTHON")/snakemake
SCRATCH=$(mktemp -d /tmp/avprobe-slurm.XXXXXX)
STATE=$SCRATCH/slurm
PARTITION=debug
pids=()

stop_daemons() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    sleep 1
    if [ -f "$STATE/slurm.conf.orig" ]; then cp "$STATE/slurm.conf.orig" /etc/slurm/slurm.conf
    else rm -f /etc/slurm/slurm.conf; fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$SCRATCH"
}
trap stop_daemons EXIT

echo "== installing SLURM, munge and the snakemake SLURM executor"
export DEBIAN_FRONTEND=noninteractive
command -v slurmctld >/dev/null || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
# requirements.txt installs it; older environments get the same pin
"$PYTHON" -c "import snakemake_executor_plugin_slurm" 2>/dev/null || \
    "$PYTHON" -m pip install -q snakemake-executor-plugin-slurm==2.8.0 2>&1 | grep -v "is ignored" || true

echo "== starting munge"
mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged"

echo "== writing a one-node slurm.conf"
mkdir -p "$STATE"/{spool,state,log}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$STATE/slurm.conf" <<EOF
ClusterName=avprobe
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# srun inside a job reads the default path, not $SLURM_CONF: install the file there.
mkdir -p /etc/slurm
[ -f /etc/slurm/slurm.conf ] && cp /etc/slurm/slurm.conf "$STATE/slurm.conf.orig"
cp "$STATE/slurm.conf" /etc/slurm/slurm.conf
export SLURM_CONF=/etc/slurm/slurm.conf
/usr/sbin/slurmctld -D -f "$SLURM_CONF" > "$STATE/log/slurmctld.out" 2>&1 &
pids+=($!)
/usr/sbin/slurmd -D -f "$SLURM_CONF" > "$STATE/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix" && break; sleep 1; done
sinfo

echo "== copying the workflow twice (local reference run, SLURM run)"
for run in local slurm; do
    mkdir -p "$SCRATCH/$run"
    cp -r "$ROOT"/{Snakefile,config.yaml,config,rules,workflow,envs,profiles,resources} "$SCRATCH/$run/"
    cp "$ROOT/tests/data/tiny_config.yaml" "$SCRATCH/$run/"
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ -n "${LOCAL_RUN:-}" ]; then
    echo "== local run: reusing $LOCAL_RUN (a finished run of the tiny study)"
    rm -rf "$SCRATCH/local" && ln -s "$(cd "$LOCAL_RUN" && pwd)" "$SCRATCH/local"
else
    echo "== local run"
    ( cd "$SCRATCH/local" && "$SNAKEMAKE" --cores 2 --configfile tiny_config.yaml --quiet rules )
fi

echo "== SLURM run through profiles/slurm, as the README says (no account: none on this cluster)"
export AVPROBE_SLURM_PARTITION=$PARTITION AVPROBE_SLURM_ACCOUNT=
# the plan of the same command (--cores: a dry run otherwise shows every job with one thread)
( cd "$SCRATCH/slurm" && "$SNAKEMAKE" -n --workflow-profile profiles/slurm --configfile tiny_config.yaml \
    --cores "$CPUS" > "$SCRATCH/planned.txt" )
start=$(date +%s)
( cd "$SCRATCH/slurm" && "$SNAKEMAKE" --workflow-profile profiles/slurm --configfile tiny_config.yaml \
    --jobs 4 --quiet rules )
echo "SLURM run took $(( $(date +%s) - start )) s"

echo "== checking SLURM's own records (state, partition, memory, time limit, CPUs of every job)"
"$PYTHON" "$ROOT/tests/cluster/check_slurm_run.py" "$SCRATCH/local" "$SCRATCH/slurm" "$STATE/log/jobcomp.txt" \
    "$SCRATCH/planned.txt" "$PARTITION"
