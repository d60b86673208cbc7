#!/usr/bin/env bash
# Throwaway PostgreSQL and MariaDB servers for the integration tests, on loopback only.
#
#   eval "$(scripts/test-servers.sh start)"   # install if missing, start, print the env vars
#   scripts/test-servers.sh env               # print the env vars of running servers
#   scripts/test-servers.sh stop              # stop both and delete their data
#
# Idempotent: `start` on running servers only prints the variables again. Installs Debian's
# `postgresql` and `mariadb-server` with apt-get when their binaries are missing (as root), and
# `chromium` with a Chinese font (`fonts-wqy-microhei`) for the lineage page's browser test, and
# `redis-server` for the scale-out stack (scripts/scaleout-stack).
# Each server keeps its data, socket and log in $GOVSHARE_TEST_SERVERS_DIR (default
# ${TMPDIR:-/tmp}/govshare-test-servers: PostgreSQL runs as the `postgres` user when started by
# root, and that user must be able to reach the folder). Ports: GOVSHARE_TEST_PG_PORT (55432) and
# GOVSHARE_TEST_MARIADB_PORT (53306). Everything but the variables goes to stderr.
set -euo pipefail
# mariadbd, runuser and friends live in the sbin folders, which a user's (or a test's) PATH may lack
PATH="$PATH:/usr/sbin:/sbin"

DIR="${GOVSHARE_TEST_SERVERS_DIR:-${TMPDIR:-/tmp}/govshare-test-servers}"
PG_PORT="${GOVSHARE_TEST_PG_PORT:-55432}"
MY_PORT="${GOVSHARE_TEST_MARIADB_PORT:-53306}"
DB=govshare_test
USER_NAME=govshare
# A throwaway password for throwaway servers on loopback; the tests check it never shows.
PASSWORD="${GOVSHARE_TEST_DB_PASSWORD:-gs-test-Pw.7}"

PG_DATA="$DIR/postgres/data"
PG_RUN="$DIR/postgres/run"
PG_LOG="$DIR/postgres/server.log"
MY_DATA="$DIR/mariadb/data"
MY_SOCK="$DIR/mariadb/mariadb.sock"
MY_PID="$DIR/mariadb/mariadb.pid"
MY_LOG="$DIR/mariadb/server.log"

say() { echo "test-servers: $*" >&2; }
die() { say "$*"; exit 1; }

pg_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$found" && -x "$found/pg_ctl" ]] && echo "$found"
}

install_missing() {
    local packages=()
    pg_bin >/dev/null || packages+=(postgresql)
    command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || packages+=(mariadb-server)
    [[ -f /usr/lib/softhsm/libsofthsm2.so ]] && command -v softhsm2-util >/dev/null || packages+=(softhsm2)  # the HSM root key's tests
    # the lineage page's test renders it in headless Chromium, with a font for its Chinese labels;
    # wanted, not needed: without root they are only named (that test then skips, saying why)
    local wanted=()
    command -v chromium >/dev/null || wanted+=(chromium)
    fc-list 2>/dev/null | grep -qi -e 'wqy' -e 'cjk' || wanted+=(fonts-wqy-microhei)
    command -v redis-server >/dev/null || wanted+=(redis-server)  # the broker of make scaleout / test-scaleout
    if ((${#wanted[@]})) && [[ "$(id -u)" != 0 ]]; then
        say "not installing ${wanted[*]} (not root): sudo apt-get install --no-install-recommends ${wanted[*]}"
    else
        packages+=("${wanted[@]}")
    fi
    ((${#packages[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || die "missing ${packages[*]}: install them (sudo apt-get install ${packages[*]}) or run as root"
    say "installing ${packages[*]} (apt-get)"
    # The packages' own services are not wanted: policy-rc.d stops dpkg from starting them.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local log
    log="$(mktemp)"
    apt-get update -qq >"$log" 2>&1 || say "apt-get update failed; trying the install with the lists at hand"
    if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "apt-get install ${packages[*]} failed"
    fi
    rm -f "$log"
    if ((created_policy)); then rm -f "$policy"; fi
    pg_bin >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/pg_ctl"
}

# Run a command as the PostgreSQL server's owner: `postgres` when we are root, else ourselves.
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_running() {
    local bin
    bin="$(pg_bin)" || return 1
    [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_start() {
    local bin
    bin="$(pg_bin)"
    if pg_running; then
        return 0
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        rm -rf "$DIR/postgres"
        mkdir -p "$PG_DATA" "$PG_RUN"
        if [[ "$(id -u)" == 0 ]]; then chown -R postgres: "$DIR/postgres"; fi
        local pwfile="$DIR/postgres/pw"
        (umask 077 && echo "$PASSWORD" >"$pwfile")
        if [[ "$(id -u)" == 0 ]]; then chown postgres: "$pwfile"; fi
        # C collation: ORDER BY key is code-point order, the same on every engine.
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" --encoding=UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$DIR/postgres/initdb.log" 2>&1 \
            || die "initdb failed: see $DIR/postgres/initdb.log"
        rm -f "$pwfile"
    fi
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_RUN -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null || die "PostgreSQL did not start: see $PG_LOG"
    local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres)
    if [[ -z "$(as_pg "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" ]]; then
        # CREATEDB: the tests make a scratch database per test.
        as_pg "${psql[@]}" -c "CREATE ROLE $USER_NAME LOGIN CREATEDB PASSWORD '$PASSWORD'"
    fi
    if [[ -z "$(as_pg "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]]; then
        as_pg "${psql[@]}" -c "CREATE DATABASE $DB OWNER $USER_NAME ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    fi
}

pg_stop() {
    local bin
    if bin="$(pg_bin)" && [[ -f "$PG_DATA/PG_VERSION" ]]; then
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

my_client() { mariadb --no-defaults --protocol=socket --socket="$MY_SOCK" -uroot "$@"; }

my_running() { [[ -S "$MY_SOCK" ]] && my_client -e "SELECT 1" >/dev/null 2>&1; }

my_start() {
    if my_running; then
        return 0
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if [[ ! -d "$MY_DATA/mysql" ]]; then
        rm -rf "$DIR/mariadb"
        mkdir -p "$MY_DATA"
        mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$MY_DATA" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/mariadb/install-db.log" 2>&1 || die "mariadb-install-db failed: see $DIR/mariadb/install-db.log"
    fi
    rm -f "$MY_SOCK"
    # utf8mb4 with a binary, no-pad collation: emoji survive and ORDER BY key is code-point order.
    setsid mariadbd --no-defaults --user="$(id -un)" --datadir="$MY_DATA" --socket="$MY_SOCK" --pid-file="$MY_PID" \
        --port="$MY_PORT" --bind-address=127.0.0.1 --log-error="$MY_LOG" --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_nopad_bin --innodb-buffer-pool-size=128M \
        --innodb-flush-log-at-trx-commit=0 --skip-log-bin </dev/null >/dev/null 2>&1 &
    local i
    for ((i = 0; i < 120; i++)); do
        my_running && break
        sleep 0.5
    done
    my_running || die "MariaDB did not start within 60 s: see $MY_LOG"
    # Scratch databases of the tests are named gs_*.
    my_client -e "CREATE DATABASE IF NOT EXISTS $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
        CREATE USER IF NOT EXISTS '$USER_NAME'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
        GRANT ALL PRIVILEGES ON $DB.* TO '$USER_NAME'@'127.0.0.1';
        GRANT ALL PRIVILEGES ON \`gs%\`.* TO '$USER_NAME'@'127.0.0.1';"
}

my_stop() {
    if [[ -f "$MY_PID" ]]; then
        local pid
        pid="$(cat "$MY_PID")"
        kill "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
}

print_env() {
    pg_running || die "PostgreSQL is not running (run: $0 start)"
    my_running || die "MariaDB is not running (run: $0 start)"
    echo "export GOVSHARE_TEST_POSTGRES_URL='postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PG_PORT/$DB'"
    echo "export GOVSHARE_TEST_MARIADB_URL='mysql://$USER_NAME:$PASSWORD@127.0.0.1:$MY_PORT/$DB'"
}

case "${1:-}" in
    start)
        started=$SECONDS
        install_missing
        pg_start
        my_start
        say "PostgreSQL on 127.0.0.1:$PG_PORT and MariaDB on 127.0.0.1:$MY_PORT ready in $((SECONDS - started)) s ($DIR)"
        print_env
        ;;
    stop)
        pg_stop
        my_stop
        rm -rf "$DIR"
        say "stopped"
        ;;
    env)
        print_env
        ;;
    *)
        echo "usage: $0 start|stop|env" >&2
        exit 2
        ;;
esac
