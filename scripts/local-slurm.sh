#!/usr/bin/env bash
# local-slurm.sh - a real Slurm cluster (one node, or K nodes) on this machine, for tests.
#
#   scripts/local-slurm.sh up [--nodes K] [--gpus N] [--cpus N] [--mem MB] [--max-array-size N] [--timeout S] [--no-accounting]
#   scripts/local-slurm.sh down
#   scripts/local-slurm.sh status
#   scripts/local-slurm.sh stop DAEMON       (fault injection: munged, slurmdbd, slurmctld or a slurmd key)
#   scripts/local-slurm.sh crash-node NODE   (fault injection: SIGKILL the node's slurmd and its jobs)
#
# Run as root on Debian/Ubuntu (no systemd needed). `up` installs slurm-wlm,
# slurmdbd, munge and mariadb-server if missing, writes the configs, starts
# munged, a private MariaDB, slurmdbd, slurmctld and one slurmd per node as
# background daemons and waits until every node is usable and `sacct` answers.
# `up` is idempotent: when everything is already up with the same settings it
# only checks health; when the settings changed (e.g. --max-array-size) it
# rewrites the configs and restarts slurmctld/slurmd (jobs and state are kept).
# Options not given fall back to their defaults (they are not remembered), so
# a plain `up` always returns to the default one-node cluster. `down` stops
# every daemon (all slurmds); `status` shows them all.
# --no-accounting: a cluster without accounting, as some sites run
# (AccountingStorageType=accounting_storage/none): slurmdbd and MariaDB are
# stopped and sacct refuses. A plain `up` restores accounting (jobs are kept).
#
# Layout: state, logs, MariaDB data and pid files live in $HPO_LOCAL_SLURM_DIR
# (default /var/lib/hpo-local-slurm). Slurm's own configs are written to
# /etc/slurm (slurm.conf, gres.conf, slurmdbd.conf) because that is where the
# Debian binaries look; munged uses its standard socket under /run/munge.
# One node: slurmd's pid file is pids/slurmd.pid, its log log/slurmd.log, its
# spool dir slurmd/. K nodes: per node pids/slurmd-nodeN.pid,
# log/slurmd-nodeN.log and slurmd/nodeN/ (slurm.conf uses %n). The node names
# of the last `up` are kept in the file "nodes".
#
# Cluster: name "hpolocal", partitions "debug" (default, PriorityTier=1,
# PreemptMode=REQUEUE, GraceTime=10) and "urgent" (PriorityTier=10) over all
# nodes: an urgent job preempts and requeues a debug job (SIGTERM, then
# SIGKILL after GraceTime, same job id).
# Default (no --nodes, or --nodes 1): one node named $(hostname -s) at
# 127.0.0.1 with N fake GPUs /dev/fakegpu0..N-1 (character devices made with
# mknod, like /dev/null). --nodes K (K > 1): nodes node1..nodeK, all at
# 127.0.0.1 (NodeHostname $(hostname -s), which Debian's multiple-slurmd
# build allows), nodeN listening on port 6830+N and run by
# `slurmd -N nodeN`; each node has N fake GPUs of its own (node1
# /dev/fakegpu0..N-1, node2 /dev/fakegpuN..2N-1, ...). The names node1..nodeK
# do not resolve (not in /etc/hosts); inside a job use 127.0.0.1 or
# $(hostname) as the address of any node.
# Switching between node sets (1 -> K -> 1) stops the slurmds no longer
# configured, SIGKILLs the job steps they leave behind and restarts slurmctld
# (which requeues, or fails, the jobs that ran on vanished nodes; queued jobs
# are kept). Only when the node names changed and slurmctld then refuses to
# start on its saved state, that state ($STATE_DIR/slurmctld) is cleared
# (moved to slurmctld.old): all jobs are lost and job ids start again at 1
# (sacct keeps the old records). Slurm 22.05 has not needed this so far.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

PROG="local-slurm"
STATE_DIR="${HPO_LOCAL_SLURM_DIR:-/var/lib/hpo-local-slurm}"
SLURM_ETC="/etc/slurm"
CLUSTER="hpolocal"
DB_PORT="${HPO_LOCAL_SLURM_DB_PORT:-13306}"
DB_NAME="slurm_acct_db"
DAEMONS=(munged mariadbd slurmdbd slurmctld)  # plus one slurmd per node

NNODES=1
NGPUS=4
NCPUS=8
MEM_MB=16000
MAX_ARRAY_SIZE=1001
TIMEOUT=90
ACCOUNTING=1  # 0 with --no-accounting: AccountingStorageType=none, no slurmdbd, sacct refuses

LOG_DIR="$STATE_DIR/log"
PID_DIR="$STATE_DIR/pids"
RUN_DIR="$STATE_DIR/run"
DB_DIR="$STATE_DIR/mysql"
MUNGE_DIR="$STATE_DIR/munge"
NODE="$(hostname -s)"
NODE_PORT_BASE=6830  # --nodes K > 1: nodeN listens on NODE_PORT_BASE+N
NODES=()             # configured node names, set from --nodes

say() { printf '[%s] %s\n' "$PROG" "$*"; }
err() { printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2; }

# show_log FILE... : tail of each non-empty file, to stderr
show_log() {
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            printf -- '----- tail of %s -----\n' "$f" >&2
            tail -n 20 "$f" >&2 || true
        fi
    done
}

# die MESSAGE [LOGFILE...]
die() {
    local msg="$1"; shift
    err "$msg"
    show_log "$@"
    exit 1
}

on_error() {
    local rc=$? line=$1 cmd=$2
    err "command failed (exit $rc) at line $line: $cmd"
    exit "$rc"
}
trap 'on_error $LINENO "$BASH_COMMAND"' ERR

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

# ---------------------------------------------------------------- processes --

# Daemons are named by a key: munged, mariadbd, slurmdbd, slurmctld, and per
# node "slurmd" (the one-node cluster's node $(hostname -s)) or "slurmd-nodeN".
comm_of() {  # process name of a daemon
    case "$1" in
        slurmd-*) echo slurmd ;;
        *)        echo "$1" ;;
    esac
}

slurmd_key() {  # slurmd_key NODE: key of the slurmd that runs NODE
    if [[ "$1" == "$NODE" ]]; then echo slurmd; else echo "slurmd-$1"; fi
}

node_of_key() {  # node_of_key KEY: inverse of slurmd_key
    if [[ "$1" == slurmd ]]; then echo "$NODE"; else echo "${1#slurmd-}"; fi
}

# started_slurmds: keys of all slurmds this script has a pid file for
started_slurmds() {
    local f
    for f in "$PID_DIR"/slurmd.pid "$PID_DIR"/slurmd-*.pid; do
        [[ -e "$f" ]] || continue
        f=${f##*/}
        echo "${f%.pid}"
    done
}

log_of() {  # main log file of a daemon
    case "$1" in
        mariadbd) echo "$LOG_DIR/mariadb.log" ;;
        *)        echo "$LOG_DIR/$1.log" ;;
    esac
}

declare -A LOG_START=()  # "file" -> size before this script started the daemon

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# daemon_die NAME MESSAGE: error line, then what the daemon logged since we
# started it (its captured stderr - a superset of the log for slurm -D - or
# else its log file)
daemon_die() {
    local name=$1 msg=$2 f off shown=0
    err "$msg (log: $(log_of "$name"))"
    for f in "$LOG_DIR/$name.stderr" "$(log_of "$name")"; do
        [[ -s "$f" ]] || continue
        off=${LOG_START[$f]:-0}
        if (( $(file_size "$f") > off )); then
            printf -- '----- %s (last lines) -----\n' "$f" >&2
            tail -c +"$((off + 1))" "$f" | tail -n 20 >&2 || true
            shown=1
            break
        fi
    done
    ((shown)) || show_log "$(log_of "$name")"
    exit 1
}

# pid_alive PID NAME: process exists, is not a zombie and its comm is NAME
pid_alive() {
    local pid=$1 name=$2 stat comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat%% *}" != "Z" ]]
}

recorded_pid() { cat "$PID_DIR/$1.pid" 2>/dev/null || true; }

running() {  # running NAME -> 0 if the daemon we started is alive
    local pid
    pid=$(recorded_pid "$1")
    [[ -n "$pid" ]] && pid_alive "$pid" "$(comm_of "$1")"
}

# spawn_daemon NAME CMD... : start CMD detached (own session), record its pid
spawn_daemon() {
    local name=$1; shift
    local f
    for f in "$LOG_DIR/$name.stderr" "$(log_of "$name")"; do
        LOG_START[$f]=$(file_size "$f")
    done
    # clean environment, own session, no inherited lock fd
    setsid env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8 \
        ${TZ:+TZ="$TZ"} "$@" </dev/null >>"$LOG_DIR/$name.stderr" 2>&1 9>&- &
    echo "$!" >"$PID_DIR/$name.pid"
}

# start_daemon NAME CMD... : spawn_daemon, then fail if it exits right away
start_daemon() {
    local name=$1 pid
    spawn_daemon "$@"
    pid=$(recorded_pid "$name")
    sleep 0.3
    if ! pid_alive "$pid" "$(comm_of "$name")"; then
        daemon_die "$name" "$name exited right after start"
    fi
}

stop_daemon() {
    local name=$1 comm pid i
    comm=$(comm_of "$name")
    pid=$(recorded_pid "$name")
    if [[ -z "$pid" ]] || ! pid_alive "$pid" "$comm"; then
        rm -f "$PID_DIR/$name.pid"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        pid_alive "$pid" "$comm" || break
        sleep 0.1
    done
    if pid_alive "$pid" "$comm"; then
        say "$name did not exit after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" "$comm" || break
            sleep 0.1
        done
    fi
    rm -f "$PID_DIR/$name.pid"
}

# kill_steps KEY: SIGKILL the job steps the slurmd KEY started (they outlive
# slurmd): each slurmstepd that has KEY's log file open, and its descendants
kill_steps() {
    local log pid fd c i=0 steps=() all=()
    log=$(log_of "$1")
    for pid in $(pgrep -x slurmstepd || true); do
        for fd in /proc/"$pid"/fd/*; do
            if [[ "$(readlink "$fd" 2>/dev/null || true)" == "$log" ]]; then
                steps+=("$pid")
                break
            fi
        done
    done
    ((${#steps[@]} > 0)) || return 0
    all=("${steps[@]}")
    while ((i < ${#all[@]})); do
        for c in $(pgrep -P "${all[$i]}" || true); do all+=("$c"); done
        i=$((i + 1))
    done
    say "killing the job steps left by $1 (slurmstepd ${steps[*]}; ${#all[@]} processes)"
    kill -KILL "${all[@]}" 2>/dev/null || true
}

# wait_for NAME SECONDS CHECK-FUNCTION : poll until CHECK succeeds
wait_for() {
    local name=$1 secs=$2 check=$3 deadline
    deadline=$((SECONDS + secs))
    while ! "$check"; do
        if ! running "$name"; then
            daemon_die "$name" "$name died during startup"
        fi
        if ((SECONDS >= deadline)); then
            daemon_die "$name" "$name not ready after ${secs}s"
        fi
        sleep 0.5
    done
}

# ----------------------------------------------------------------- checks ----

munge_ok()   { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
db_sql()     { mariadb --no-defaults --protocol=socket --socket="$RUN_DIR/mysql/mysqld.sock" -uroot "$@"; }
mariadb_ok() { mariadb-admin --no-defaults --protocol=socket --socket="$RUN_DIR/mysql/mysqld.sock" -uroot ping >/dev/null 2>&1; }
dbd_ok()     { timeout 15 sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
ctld_ok()    { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }
sacct_ok()   { timeout 15 sacct -n -a -X -S now-1hours -o JobID >/dev/null 2>&1; }
node_state() { timeout 10 sinfo -h -N -n "${1:-$NODE}" -o '%T' 2>/dev/null | head -n 1; }
node_ok()    { [[ "$(node_state "$1")" =~ ^(idle|mixed|allocated|completing)$ ]]; }
nodes_ok() {  # every configured node usable
    local n
    for n in "${NODES[@]}"; do node_ok "$n" || return 1; done
}
nodes_states() {  # "node1 idle, node2 idle"
    local n out=()
    for n in "${NODES[@]}"; do out+=("$n $(node_state "$n")"); done
    local IFS=,
    echo "${out[*]}" | sed 's/,/, /g'
}

# ------------------------------------------------------------------ install --

ensure_packages() {
    local pkgs=(slurm-wlm slurmdbd munge mariadb-server) missing=() p
    for p in "${pkgs[@]}"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]]; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then return 0; fi
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
    say "installing ${missing[*]} (apt-get)"
    # no service may be started by the package scripts (no systemd here; we
    # start our own daemons)
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local aptlog="$LOG_DIR/apt.log" rc=0 i
    : >"$aptlog"
    # let a running apt-get/dpkg (e.g. a background `apt-get update`) finish first
    for ((i = 0; i < 600; i++)); do
        pgrep -x 'apt(-get)?|dpkg' >/dev/null || break
        ((i % 30 == 0)) && say "waiting for a running apt-get/dpkg to finish"
        sleep 1
    done
    {
        apt-get -o DPkg::Lock::Timeout=600 update &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
            --no-install-recommends "${missing[@]}"
    } >>"$aptlog" 2>&1 || rc=$?
    if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((rc == 0)) || die "apt-get failed (exit $rc) installing ${missing[*]} (log: $aptlog)" "$aptlog"
}

# ------------------------------------------------------------------ configs --

# write_if_changed FILE MODE : content from stdin; returns 0 if FILE changed
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

db_password() {
    local f="$STATE_DIR/db.password"
    if [[ ! -s "$f" ]]; then
        (umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
    fi
    cat "$f"
}

SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0
NODES_CHANGED=0

write_configs() {
    local i n gpus_gres="" max_job_count=10000
    mkdir -p "$SLURM_ETC"
    if ((NGPUS > 0)); then gpus_gres="Gres=gpu:$NGPUS"; fi
    if ((MAX_ARRAY_SIZE * 2 > max_job_count)); then max_job_count=$((MAX_ARRAY_SIZE * 2)); fi

    for ((i = 0; i < NNODES * NGPUS; i++)); do
        [[ -e /dev/fakegpu$i ]] || mknod "/dev/fakegpu$i" c 1 3
    done

    # one node: the historical config (node $(hostname -s)); K nodes: one
    # slurmd per node on this host (multiple-slurmd), files named with %n
    local what="one-node" spool="$STATE_DIR/slurmd" slurmd_pid="$RUN_DIR/slurmd.pid"
    local slurmd_log="$LOG_DIR/slurmd.log" node_lines="" part_nodes="$NODE"
    local accounting="AccountingStorageType=accounting_storage/none"
    if ((ACCOUNTING)); then
        # association and QOS limits (e.g. MaxSubmitJobs) are enforced, as on production clusters
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=limits"
    fi
    local node_hw="CPUs=$NCPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NCPUS ThreadsPerCore=1 RealMemory=$MEM_MB $gpus_gres State=UNKNOWN"
    if ((NNODES == 1)); then
        node_lines="NodeName=$NODE NodeAddr=127.0.0.1 $node_hw"
    else
        what="$NNODES-node (multiple-slurmd)"
        spool="$STATE_DIR/slurmd/%n"
        slurmd_pid="$RUN_DIR/slurmd-%n.pid"
        slurmd_log="$LOG_DIR/slurmd-%n.log"
        part_nodes="node[1-$NNODES]"
        node_lines=$(for ((i = 1; i <= NNODES; i++)); do
            echo "NodeName=node$i NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((NODE_PORT_BASE + i)) $node_hw"
        done)
    fi

    if write_if_changed "$SLURM_ETC/slurm.conf" 644 <<EOF
# Written by hpo-slurm scripts/local-slurm.sh - local $what test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$slurmd_log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
# no systemd / cgroup delegation here: track processes by /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$accounting
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,bf_continue
# at preemption, send the job's --signal (e.g. B:USR1@N) at once instead of SIGTERM to steps
SlurmctldParameters=preempt_send_user_signal
# requeued (e.g. preempted) jobs may start again after cred_expire+1 seconds (default 120)
AuthInfo=cred_expire=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
# reject impossible requests (e.g. more CPUs than the node has) at submit time
EnforcePartLimits=ALL
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$max_job_count
MinJobAge=60
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
# a node whose slurmd stops answering is set DOWN (its jobs requeued) after 30 s, not Slurm's 300
SlurmdTimeout=30
MessageTimeout=10
ReturnToService=2
GresTypes=gpu
# fake a bigger node than the machine has (2 cores)
SlurmdParameters=config_overrides
$node_lines
PartitionName=debug Nodes=$part_nodes Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=10 MaxTime=INFINITE State=UP
PartitionName=urgent Nodes=$part_nodes PriorityTier=10 MaxTime=INFINITE State=UP
EOF
    then SLURM_CONF_CHANGED=1; fi

    if {
        echo "# Written by hpo-slurm scripts/local-slurm.sh"
        for ((n = 0; n < NNODES; n++)); do
            for ((i = n * NGPUS; i < (n + 1) * NGPUS; i++)); do
                echo "NodeName=${NODES[$n]} Name=gpu File=/dev/fakegpu$i"
            done
        done
    } | write_if_changed "$SLURM_ETC/gres.conf" 644; then SLURM_CONF_CHANGED=1; fi

    local pass
    pass=$(db_password)
    if write_if_changed "$SLURM_ETC/slurmdbd.conf" 600 <<EOF
# Written by hpo-slurm scripts/local-slurm.sh
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=$DB_NAME
EOF
    then DBD_CONF_CHANGED=1; fi
    chown root:root "$SLURM_ETC/slurmdbd.conf"

    write_if_changed "$DB_DIR/my.cnf" 644 <<EOF || true
[mysqld]
datadir=$DB_DIR/data
socket=$RUN_DIR/mysql/mysqld.sock
pid-file=$RUN_DIR/mysql/mysqld.pid
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
log-error=$LOG_DIR/mariadb.log
innodb_buffer_pool_size=256M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
max_allowed_packet=64M
EOF
}

make_dirs() {
    mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR" "$RUN_DIR" "$DB_DIR/data" "$MUNGE_DIR" \
        "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    if ((NNODES > 1)); then
        local n
        for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/slurmd/$n"; done
    fi
    chmod 755 "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
}

# ------------------------------------------------------------------ daemons --

start_munged() {
    if running munged; then return 0; fi
    if munge_ok; then
        say "munged already running (not started by this script); using it"
        return 0
    fi
    id munge >/dev/null 2>&1 || die "user 'munge' missing (is the munge package installed?)"
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge "$MUNGE_DIR"
    chmod 755 /run/munge
    chmod 700 "$MUNGE_DIR"
    touch "$LOG_DIR/munged.log" "$LOG_DIR/munged.stderr"
    chown munge:munge "$LOG_DIR/munged.log" "$LOG_DIR/munged.stderr"
    chmod 640 "$LOG_DIR/munged.log"
    say "starting munged"
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups \
        /usr/sbin/munged --foreground --log-file="$LOG_DIR/munged.log" \
        --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for munged "$TIMEOUT" munge_ok
}

start_mariadb() {
    if ! running mariadbd; then
        id mysql >/dev/null 2>&1 || die "user 'mysql' missing (is mariadb-server installed?)"
        chown -R mysql:mysql "$DB_DIR/data"
        touch "$LOG_DIR/mariadb.log" "$LOG_DIR/mariadbd.stderr"
        chown mysql:mysql "$LOG_DIR/mariadb.log" "$LOG_DIR/mariadbd.stderr"
        # the socket dir must be writable by mysql
        mkdir -p "$RUN_DIR/mysql"
        chown mysql:mysql "$RUN_DIR/mysql"
        if [[ ! -d "$DB_DIR/data/mysql" ]]; then
            say "initialising MariaDB data dir $DB_DIR/data"
            mariadb-install-db --defaults-file="$DB_DIR/my.cnf" --user=mysql \
                --datadir="$DB_DIR/data" --auth-root-authentication-method=socket \
                --skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed (log: $LOG_DIR/mariadb-install.log)" "$LOG_DIR/mariadb-install.log"
        fi
        say "starting MariaDB (127.0.0.1:$DB_PORT)"
        start_daemon mariadbd /usr/sbin/mariadbd --defaults-file="$DB_DIR/my.cnf" --user=mysql
        wait_for mariadbd "$TIMEOUT" mariadb_ok
    fi
    local pass
    pass=$(db_password)
    db_sql <<EOF || die "could not create the slurm database user (log: $LOG_DIR/mariadb.log)" "$LOG_DIR/mariadb.log"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO 'slurm'@'localhost';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    if running slurmdbd && ((DBD_CONF_CHANGED)); then
        say "slurmdbd.conf changed, restarting slurmdbd"
        stop_daemon slurmdbd
    fi
    if ! running slurmdbd; then
        say "starting slurmdbd"
        start_daemon slurmdbd /usr/sbin/slurmdbd -D
    fi
    wait_for slurmdbd "$TIMEOUT" dbd_ok
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        say "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >>"$LOG_DIR/sacctmgr.log" 2>&1 ||
            die "sacctmgr add cluster $CLUSTER failed (log: $LOG_DIR/sacctmgr.log)" "$LOG_DIR/sacctmgr.log"
    fi
}

# ctld_answers: slurmctld (just spawned) answers -> 0, exits -> 1
ctld_answers() {
    local deadline=$((SECONDS + TIMEOUT))
    until ctld_ok; do
        running slurmctld || return 1
        ((SECONDS < deadline)) || daemon_die slurmctld "slurmctld not ready after ${TIMEOUT}s"
        sleep 0.5
    done
}

start_slurmctld() {
    if running slurmctld && ((SLURM_CONF_CHANGED)); then
        if ((NODES_CHANGED)); then
            say "node names changed ($(recorded_nodes | paste -sd ' ') -> ${NODES[*]}), restarting slurmctld"
        else
            say "slurm.conf/gres.conf changed, restarting slurmctld (state is kept)"
        fi
        stop_daemon slurmctld
    fi
    if ! running slurmctld; then
        say "starting slurmctld"
        if ((NODES_CHANGED)); then
            # the saved state may name nodes that no longer exist
            spawn_daemon slurmctld /usr/sbin/slurmctld -D
            if ! ctld_answers; then
                say "slurmctld refused its saved state after the node names changed;" \
                    "clearing it (moved to $STATE_DIR/slurmctld.old)"
                rm -rf "$STATE_DIR/slurmctld.old"
                mv "$STATE_DIR/slurmctld" "$STATE_DIR/slurmctld.old"
                mkdir -p "$STATE_DIR/slurmctld"
                start_daemon slurmctld /usr/sbin/slurmctld -D
            fi
        else
            start_daemon slurmctld /usr/sbin/slurmctld -D
        fi
    fi
    wait_for slurmctld "$TIMEOUT" ctld_ok
}

declare -A RESUMED=()  # node -> 1 once we asked to resume it
CHECK_NODE=""          # node that node_ok_or_resume checks
node_ok_or_resume() {
    local st
    st=$(node_state "$CHECK_NODE")
    [[ "$st" =~ ^(idle|mixed|allocated|completing)$ ]] && return 0
    # drained/down (but responding) from an earlier run: put it back in service
    if [[ -z "${RESUMED[$CHECK_NODE]:-}" && "$st" =~ ^(down|drain|drained|draining)$ ]]; then
        RESUMED[$CHECK_NODE]=1
        scontrol update NodeName="$CHECK_NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    return 1
}

# stop_stale_slurmds: stop the slurmds of nodes that are no longer configured
# (and kill the job steps they leave behind; slurmctld requeues or fails those jobs)
stop_stale_slurmds() {
    local key n keep
    for key in $( (started_slurmds; recorded_nodes | while read -r n; do slurmd_key "$n"; done) | sort -u); do
        keep=0
        for n in "${NODES[@]}"; do
            [[ "$key" == "$(slurmd_key "$n")" ]] && keep=1
        done
        ((keep == 0)) || continue
        if running "$key"; then
            say "node $(node_of_key "$key") is no longer configured"
            stop_daemon "$key"
        fi
        kill_steps "$key"
    done
}

start_slurmds() {
    local n key
    for n in "${NODES[@]}"; do
        key=$(slurmd_key "$n")
        if running "$key" && ((SLURM_CONF_CHANGED)); then
            say "restarting $key"
            stop_daemon "$key"
        fi
    done
    for n in "${NODES[@]}"; do
        key=$(slurmd_key "$n")
        if ! running "$key"; then
            say "starting $key (node $n: $NCPUS CPUs, ${MEM_MB} MB, $NGPUS fake GPUs)"
            if ((NNODES == 1)); then
                start_daemon "$key" /usr/sbin/slurmd -D
            else
                start_daemon "$key" /usr/sbin/slurmd -D -N "$n"
            fi
        fi
    done
    for n in "${NODES[@]}"; do
        CHECK_NODE=$n
        wait_for "$(slurmd_key "$n")" "$TIMEOUT" node_ok_or_resume
    done
}

# ---------------------------------------------------------------- commands ---

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do
        if [[ "$d" == munged ]]; then
            running munged || munge_ok || return 1
        else
            running "$d" || return 1
        fi
    done
    for d in "${NODES[@]}"; do
        running "$(slurmd_key "$d")" || return 1
    done
}

NODES_FILE="$STATE_DIR/nodes"  # node names of the last successful `up`
recorded_nodes() { cat "$NODES_FILE" 2>/dev/null || echo "$NODE"; }
ACCOUNTING_FILE="$STATE_DIR/accounting"  # 1 or 0: whether the last successful `up` kept accounting

take_lock() {  # serialise concurrent up/down calls
    exec 9>"$STATE_DIR/lock"
    flock -w 600 9 || die "another local-slurm.sh up/down holds $STATE_DIR/lock"
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local t0=$SECONDS
    make_dirs
    take_lock
    ensure_packages
    write_configs
    if [[ "$(recorded_nodes)" != "$(printf '%s\n' "${NODES[@]}")" ]]; then NODES_CHANGED=1; fi
    stop_stale_slurmds
    if all_running && ((SLURM_CONF_CHANGED == 0 && DBD_CONF_CHANGED == 0)) &&
        ctld_ok && nodes_ok && { ((ACCOUNTING == 0)) || sacct_ok; }; then
        say "already up (node $(nodes_states)); nothing to do"
        return 0
    fi
    start_munged
    if ((ACCOUNTING)); then
        start_mariadb
        start_slurmdbd
    else  # a cluster without accounting runs neither
        stop_daemon slurmdbd
        stop_daemon mariadbd
    fi
    start_slurmctld
    start_slurmds
    # sacct answers (slurmctld <-> slurmdbd <-> MariaDB)
    if ((ACCOUNTING)); then wait_for slurmdbd "$TIMEOUT" sacct_ok; fi
    printf '%s\n' "${NODES[@]}" >"$NODES_FILE"
    echo "$ACCOUNTING" >"$ACCOUNTING_FILE"
    say "up in $((SECONDS - t0))s: cluster $CLUSTER, node $(nodes_states)," \
        "partitions debug(default)/urgent, MaxArraySize=$MAX_ARRAY_SIZE," \
        "accounting $( ((ACCOUNTING)) && echo on || echo off), state dir $STATE_DIR"
}

cmd_down() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local d i
    [[ -d "$STATE_DIR" ]] || { say "nothing to stop ($STATE_DIR does not exist)"; return 0; }
    take_lock
    for d in $(started_slurmds); do
        stop_daemon "$d"
    done
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[$i]}
        stop_daemon "$d"
    done
    say "down (packages, configs and state in $STATE_DIR kept)"
}

cmd_status() {
    local d n pid rc=0 slurmds=()
    mapfile -t NODES < <(recorded_nodes)
    if [[ "$(cat "$ACCOUNTING_FILE" 2>/dev/null)" == 0 ]]; then DAEMONS=(munged slurmctld); fi
    for n in "${NODES[@]}"; do slurmds+=("$(slurmd_key "$n")"); done
    for d in $(started_slurmds); do  # stale ones (not configured) too
        [[ " ${slurmds[*]} " == *" $d "* ]] || slurmds+=("$d")
    done
    for d in "${DAEMONS[@]}" "${slurmds[@]}"; do
        pid=$(recorded_pid "$d")
        if running "$d"; then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        elif [[ "$d" == munged ]] && munge_ok 2>/dev/null; then
            printf '%-10s running (not started by this script)\n' "$d"
        else
            printf '%-10s not running\n' "$d"
            rc=1
        fi
    done
    if running slurmctld && command -v sinfo >/dev/null; then
        timeout 10 sinfo || rc=1
        nodes_ok || rc=1
    fi
    return $rc
}

# stop DAEMON: stop one daemon this script started (SIGTERM, as an admin's
# restart would), leaving the others up; `up` starts it again. A slurmd is
# named by its key: slurmd (one-node cluster) or slurmd-nodeN.
cmd_stop() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    [[ "$1" =~ ^(munged|mariadbd|slurmdbd|slurmctld|slurmd|slurmd-node[0-9]+)$ ]] || die "no such daemon: $1"
    take_lock
    stop_daemon "$1"
}

# crash-node NODE: the node dies as if it lost power: its slurmd and every job
# step it started are SIGKILLed at once. slurmctld marks the node DOWN after
# SlurmdTimeout (Slurm requeues its jobs); `up` starts its slurmd again.
cmd_crash_node() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local key pid
    key=$(slurmd_key "$1")
    running "$key" || die "no running slurmd for node $1"
    take_lock
    pid=$(recorded_pid "$key")
    say "crashing node $1: SIGKILL to $key (pid $pid) and its job steps"
    kill -KILL "$pid"
    kill_steps "$key"
    rm -f "$PID_DIR/$key.pid"
}

# --------------------------------------------------------------------- main --

[[ $# -ge 1 ]] || usage
CMD=$1; shift
TARGET=""
if [[ "$CMD" == stop || "$CMD" == crash-node ]]; then
    [[ $# -ge 1 ]] || usage
    TARGET=$1; shift
fi
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NNODES=${2:?}; shift 2 ;;
        --nodes=*) NNODES=${1#*=}; shift ;;
        --gpus) NGPUS=${2:?}; shift 2 ;;
        --gpus=*) NGPUS=${1#*=}; shift ;;
        --cpus) NCPUS=${2:?}; shift 2 ;;
        --cpus=*) NCPUS=${1#*=}; shift ;;
        --mem) MEM_MB=${2:?}; shift 2 ;;
        --mem=*) MEM_MB=${1#*=}; shift ;;
        --max-array-size) MAX_ARRAY_SIZE=${2:?}; shift 2 ;;
        --max-array-size=*) MAX_ARRAY_SIZE=${1#*=}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --no-accounting) ACCOUNTING=0; shift ;;
        -h|--help) usage ;;
        *) err "unknown option: $1"; usage ;;
    esac
done
for v in NNODES NGPUS NCPUS MEM_MB MAX_ARRAY_SIZE TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "option value for $v must be a number: '${!v}'"
done
((NCPUS >= 1)) || die "--cpus must be >= 1"
((NNODES >= 1)) || die "--nodes must be >= 1"
if ((ACCOUNTING == 0)); then DAEMONS=(munged slurmctld); fi
if ((NNODES == 1)); then
    NODES=("$NODE")
else
    for ((i = 1; i <= NNODES; i++)); do NODES+=("node$i"); done
fi

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) if cmd_status; then exit 0; else exit 1; fi ;;
    stop) cmd_stop "$TARGET" ;;
    crash-node) cmd_crash_node "$TARGET" ;;
    -h|--help|help) usage ;;
    *) err "unknown command: $CMD"; usage ;;
esac
