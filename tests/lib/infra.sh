# Shared by tests/run and tests/bench: install tools, start a private PostgreSQL and nats-server
# on free loopback ports in a scratch directory (unless DATABASE_URL / NATS_URL point at
# reachable servers), and stop them on exit. Source it after `set -euo pipefail`.
#
# After `infra_start [fast]`: DATABASE_URL, NATS_URL, NATS_SERVER, PG_BIN, KUBERNETES_VALIDATE, NODE, HELM, PROMTOOL, CHROMIUM, CHROMEDRIVER,
# AIOSMTPD_PYTHON, LOCALSTRIPE_PYTHON are exported and `$scratch` holds the servers' data and logs. `fast` turns PostgreSQL's fsync
# off (tests only; benchmarks and `tienda up` keep it on).

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
as_pg() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
tcp_reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
url_host_port() { # url default_port -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

scratch=""
pg_data=""
nats_pid=""

infra_cleanup() {
  local rc=$?
  if [[ -n "$nats_pid" ]]; then kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
  if [[ -n "$pg_data" ]]; then as_pg "$PG_BIN/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  if [[ -n "$scratch" ]]; then
    if [[ "${TIENDA_TEST_KEEP:-}" == 1 || $rc -ne 0 ]]; then
      echo "scratch directory kept: $scratch" >&2
    else
      rm -rf "$scratch"
    fi
  fi
  exit $rc
}

infra_start() {
  local mode="${1:-}"
  step "tools"
  eval "$(tests/tools/install)"
  export PG_BIN NATS_SERVER KUBERNETES_VALIDATE NODE HELM AIOSMTPD_PYTHON LOCALSTRIPE_PYTHON PROMTOOL CHROMIUM CHROMEDRIVER

  scratch="$(mktemp -d /tmp/tienda-test.XXXXXX)"
  trap infra_cleanup EXIT
  trap 'exit 130' INT TERM

  step "PostgreSQL"
  if [[ -n "${DATABASE_URL:-}" ]]; then
    read -r h p <<<"$(url_host_port "$DATABASE_URL" 5432)"
    tcp_reachable "$h" "$p" || fail "DATABASE_URL is set but $h:$p does not answer; unset it to use a private server"
    echo "using DATABASE_URL at $h:$p"
  else
    local pg_port pg_opts
    pg_port="$(free_port)"
    pg_data="$scratch/pg"
    mkdir -p "$pg_data"
    [[ "$(id -u)" == 0 ]] && chown -R postgres:postgres "$scratch"
    chmod 755 "$scratch"
    # Password (SCRAM) authentication over TCP, as a real server has: the tests check that the
    # roles provisioning creates log in with their own passwords and nothing else.
    local pg_password="tienda-local-admin"
    echo "$pg_password" >"$scratch/pg.pw"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$scratch/pg.pw"
    as_pg "$PG_BIN/initdb" -D "$pg_data" -U postgres --pwfile="$scratch/pg.pw" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync >"$scratch/initdb.log" 2>&1 \
      || { cat "$scratch/initdb.log"; fail "initdb failed"; }
    pg_opts="-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c max_connections=400"
    if [[ "$mode" == fast ]]; then
      pg_opts="$pg_opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 60 -o "$pg_opts" start >/dev/null \
      || { cat "$pg_data/server.log"; fail "PostgreSQL did not start"; }
    export DATABASE_URL="postgres://postgres:$pg_password@127.0.0.1:$pg_port/postgres"
    echo "started PostgreSQL on 127.0.0.1:$pg_port${mode:+ ($mode)}"
  fi

  step "NATS"
  if [[ -n "${NATS_URL:-}" ]]; then
    read -r h p <<<"$(url_host_port "$NATS_URL" 4222)"
    tcp_reachable "$h" "$p" || fail "NATS_URL is set but $h:$p does not answer; unset it to use a private server"
    echo "using NATS_URL at $h:$p"
  else
    local nats_port
    nats_port="$(free_port)"
    mkdir -p "$scratch/nats"
    cat >"$scratch/nats/nats.conf" <<CONF
listen: 127.0.0.1:$nats_port
jetstream {
  store_dir: "$scratch/nats/data"
  sync_interval: always
}
CONF
    "$NATS_SERVER" -c "$scratch/nats/nats.conf" >"$scratch/nats/server.log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 1 100); do tcp_reachable 127.0.0.1 "$nats_port" && break; sleep 0.1; done
    tcp_reachable 127.0.0.1 "$nats_port" || { cat "$scratch/nats/server.log"; fail "nats-server did not start"; }
    export NATS_URL="nats://127.0.0.1:$nats_port"
    echo "started nats-server on 127.0.0.1:$nats_port"
  fi
}
