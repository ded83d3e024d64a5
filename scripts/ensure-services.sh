#!/usr/bin/env bash
# Installs and starts what Attaché needs on a Debian machine: PostgreSQL and
# RabbitMQ on 127.0.0.1, Python 3 with venv, a C toolchain, curl and Rust.
#
# Safe to run again: it installs only what is missing and starts a service
# only when it does not respond. It prints one line per component. A service
# that was already installed is never reconfigured. Only a PostgreSQL or
# RabbitMQ that this run installs gets the loopback-only settings below.
set -euo pipefail

readonly pg_port=5432
readonly rabbitmq_env_conf=/etc/rabbitmq/rabbitmq-env.conf

die() {
    echo "ensure-services: error: $*" >&2
    exit 1
}

# Commands that need root go through sudo when the script runs as another user.
if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    die "not running as root and sudo is missing: rerun as root or install sudo"
fi

# Rust installed by rustup for this user may not be on PATH yet.
if [[ -d $HOME/.cargo/bin ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# Debian package names of what is missing, filled in by find_missing_packages.
missing_packages=()
installed_postgresql=false
installed_rabbitmq=false

find_missing_packages() {
    command -v pg_ctlcluster >/dev/null || missing_packages+=(postgresql)
    command -v rabbitmq-server >/dev/null || missing_packages+=(rabbitmq-server)
    command -v curl >/dev/null || missing_packages+=(curl)
    # The benchmark's load generator, which `make test` runs in its smoke run.
    command -v wrk >/dev/null || missing_packages+=(wrk)
    if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
        missing_packages+=(build-essential)
    fi

    # Debian ships ensurepip, which `python3 -m venv` needs, in python3-venv.
    if ! command -v python3 >/dev/null; then
        missing_packages+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing_packages+=(python3-venv)
    fi
}

# Writes the RabbitMQ environment file before the package is installed, so the
# node never listens beyond loopback. The package keeps an existing file. The
# names carry no RABBITMQ_ prefix because rabbitmq-env.conf(5) drops it.
write_rabbitmq_loopback_env() {
    "${as_root[@]}" mkdir -p "$(dirname "$rabbitmq_env_conf")"
    "${as_root[@]}" tee "$rabbitmq_env_conf" >/dev/null <<'EOF'
# Written by Attaché's scripts/ensure-services.sh: listen on loopback only.
# The node name uses localhost because epmd below binds 127.0.0.1 only.
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
}

install_missing_packages() {
    if [[ ${#missing_packages[@]} -eq 0 ]]; then
        return
    fi
    command -v apt-get >/dev/null ||
        die "missing ${missing_packages[*]} and apt-get is not available: install them yourself"

    for package in "${missing_packages[@]}"; do
        case $package in
            postgresql) installed_postgresql=true ;;
            rabbitmq-server) installed_rabbitmq=true ;;
        esac
    done
    if $installed_rabbitmq && [[ ! -e $rabbitmq_env_conf ]]; then
        write_rabbitmq_loopback_env
    fi

    echo "packages: installing ${missing_packages[*]}"
    "${as_root[@]}" apt-get update -qq ||
        die "apt-get update failed: check the network and /etc/apt/sources.list.d"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confold \
        "${missing_packages[@]}" >/dev/null ||
        die "apt-get install ${missing_packages[*]} failed: run it by hand to see why"
    echo "packages: installed ${missing_packages[*]}"
}

# Prints "installed" when this run installed any of the named packages.
install_state() {
    local package
    for package in "$@"; do
        if [[ " ${missing_packages[*]} " == *" $package "* ]]; then
            echo installed
            return
        fi
    done
    echo present
}

report_tools() {
    echo "python3: $(install_state python3 python3-venv) ($(python3 --version 2>&1), venv)"
    echo "build tools: $(install_state build-essential curl) ($(cc --version | head -n 1), make, curl)"
    echo "wrk: $(install_state wrk) ($(wrk --version 2>&1 | head -n 1))"
}

ensure_rust() {
    if command -v cargo >/dev/null; then
        echo "rust: present ($(cargo --version))"
        return
    fi
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --quiet --profile minimal >/dev/null ||
        die "installing Rust with rustup failed: see https://rustup.rs"
    echo "rust: installed with rustup, so add \$HOME/.cargo/bin to PATH in new shells"
}

# Prints the newest cluster version under /etc/postgresql, or nothing.
postgresql_version() {
    find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true
}

postgresql_accepts_connections() {
    pg_isready -q -h 127.0.0.1 -p "$pg_port"
}

postgresql_accepts_user_postgres() {
    psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null 2>&1
}

start_postgresql() {
    local version
    version=$(postgresql_version)
    [[ -n $version ]] ||
        die "PostgreSQL is installed but /etc/postgresql has no cluster: create one with pg_createcluster"
    "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        die "pg_ctlcluster $version main start failed: see /var/log/postgresql/postgresql-$version-main.log"

    for _ in $(seq 1 30); do
        postgresql_accepts_connections && return
        sleep 1
    done
    die "PostgreSQL started but 127.0.0.1:$pg_port refuses connections after 30 s:" \
        "check listen_addresses and port in /etc/postgresql/$version/main/postgresql.conf"
}

# Lets user postgres connect over TCP from 127.0.0.1 without a password.
# Called only for a cluster that this run installed, whose stock pg_hba.conf
# requires a password that the postgres role does not have.
trust_local_tcp_for_postgres() {
    local version hba
    version=$(postgresql_version)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    "${as_root[@]}" sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    echo "postgresql: added 'host all postgres 127.0.0.1/32 trust' to $hba"
}

ensure_postgresql() {
    local state="already running"
    if ! postgresql_accepts_connections; then
        start_postgresql
        state=started
    fi
    if $installed_postgresql; then
        state="installed and started"
    fi

    if ! postgresql_accepts_user_postgres; then
        $installed_postgresql ||
            die "PostgreSQL at 127.0.0.1:$pg_port rejects user postgres: allow it in pg_hba.conf" \
                "(host all postgres 127.0.0.1/32 trust) or export PGPASSWORD"
        trust_local_tcp_for_postgres
        postgresql_accepts_user_postgres ||
            die "PostgreSQL at 127.0.0.1:$pg_port still rejects user postgres: check pg_hba.conf"
    fi
    echo "postgresql: $state on 127.0.0.1:$pg_port"
}

rabbitmq_running() {
    "${as_root[@]}" rabbitmq-diagnostics -q check_running >/dev/null 2>&1
}

# With RabbitMQ 3.10, `ping` succeeds before the broker accepts clients and
# `await_startup` exits 69 when called before the node exists, so this polls
# check_running.
ensure_rabbitmq() {
    if rabbitmq_running; then
        if $installed_rabbitmq; then
            echo "rabbitmq: installed and running on 127.0.0.1:5672"
        else
            echo "rabbitmq: already running"
        fi
        return
    fi
    "${as_root[@]}" rabbitmq-server -detached ||
        die "rabbitmq-server -detached failed: see /var/log/rabbitmq"

    for _ in $(seq 1 60); do
        if rabbitmq_running; then
            if $installed_rabbitmq; then
                echo "rabbitmq: installed and started on 127.0.0.1:5672"
            else
                echo "rabbitmq: started"
            fi
            return
        fi
        sleep 1
    done
    die "RabbitMQ did not report running within 60 s: see /var/log/rabbitmq"
}

find_missing_packages
install_missing_packages
report_tools
ensure_rust
ensure_postgresql
ensure_rabbitmq
