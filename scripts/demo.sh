#!/usr/bin/env bash
# Runs the end-to-end demo behind `make demo`.
#
# Starts PostgreSQL and RabbitMQ if needed, prepares .venv, builds the debug
# binaries, recreates the attache_demo database, deletes the attache_demo*
# queues left by an earlier run, then runs scripts/demo.py (arguments are
# passed on, e.g. --timeout 300). On any exit it stops demo.py, and any
# binary, moto server, gcp-storage-emulator or Azurite that demo.py left
# running, by pid. It leaves PostgreSQL and RabbitMQ running.

# The stop functions run from the EXIT trap, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
readonly run_dir=.run/demo
readonly database=attache_demo
readonly queue_prefix=attache_demo

# rustup installs cargo here, possibly during ensure-services.sh.
PATH="$HOME/.cargo/bin:$PATH"
if [[ $(id -u) -eq 0 ]]; then
    as_root=()
else
    as_root=(sudo)
fi

demo_pid=""

# Tells whether pid is running. A zombie does not count, because a binary
# orphaned by a killed demo.py stays one until init reaps it.
is_running() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

# Sends SIGTERM to pid, then SIGKILL if it is still running after the given
# number of seconds.
stop_pid() {
    local pid=$1 grace=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 $((grace * 10))); do
        is_running "$pid" || return 0
        sleep 0.1
    done
    echo "demo: pid $pid still running after ${grace} s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# demo.py stops the binaries, moto, gcp-storage-emulator and Azurite itself,
# which takes up to 10 s. The pid files cover a demo.py that was killed
# before it could.
stop_everything() {
    if [[ -n $demo_pid ]]; then
        stop_pid "$demo_pid" 20
        wait "$demo_pid" 2>/dev/null || true
    fi
    local pid_file pid
    for pid_file in "$run_dir"/*.pid; do
        [[ -f $pid_file ]] || continue
        pid=$(<"$pid_file")
        # Only a process that still runs an Attaché binary, moto or an
        # emulator: the pid may have been reused since the file was written.
        if grep -qaE 'attache-|moto\.server|gcp_storage_emulator|azurite-blob' "/proc/$pid/cmdline" 2>/dev/null; then
            stop_pid "$pid" 10
        fi
        rm -f "$pid_file"
    done
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

recreate_database() {
    PGOPTIONS="-c client_min_messages=warning" \
        psql -h 127.0.0.1 -U postgres -d postgres -w -q -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" \
        -c "CREATE DATABASE $database" ||
        { echo "demo: error: cannot recreate database $database on 127.0.0.1:5432" >&2; exit 1; }
}

# Queues from an earlier run may hold messages for tasks of the dropped
# database, or have been declared with arguments that the current build
# declares differently, which RabbitMQ rejects.
delete_demo_queues() {
    local listing queues queue deleted=0
    listing=$("${as_root[@]}" rabbitmqctl list_queues --silent name) ||
        { echo "demo: error: rabbitmqctl list_queues failed: run scripts/ensure-services.sh" >&2; exit 1; }
    mapfile -t queues <<<"$listing"
    for queue in "${queues[@]}"; do
        case $queue in
            "$queue_prefix" | "$queue_prefix".* | "$queue_prefix"_* | "$queue_prefix"-*)
                "${as_root[@]}" rabbitmqctl delete_queue --quiet "$queue" >/dev/null
                deleted=$((deleted + 1))
                ;;
        esac
    done
    if [[ $deleted -gt 0 ]]; then
        echo "demo: deleted $deleted $queue_prefix queues left by an earlier run"
    fi
}

bash scripts/ensure-services.sh
bash scripts/python-env.sh
echo "demo: cargo build --bins"
cargo build --bins
recreate_database
delete_demo_queues

.venv/bin/python scripts/demo.py "$@" &
demo_pid=$!
status=0
wait "$demo_pid" || status=$?
demo_pid=""
exit "$status"
