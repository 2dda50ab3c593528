#!/usr/bin/env bash
# Makes sure the system programs the stack and tests need are installed:
# redis-server/redis-cli, PostgreSQL (unless PG_DSN names a server or one
# answers on 127.0.0.1:5432), kubectl (Debian's kubernetes-client), which
# renders deploy/k8s offline for tests/deploy, and promtool, which checks the
# alert rules (deploy/prometheus/alerts.yml). Installs Debian's packages when
# it can (root and apt-get); otherwise says exactly what to install. promtool
# alone is unpacked from Debian's prometheus package into .venv/bin: installing
# the package would also start a Prometheus server, listening on every
# address, wherever packages start their services.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
have_pg_server() {
  [ -n "${PG_DSN:-}" ] && return 0
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && return 0
  command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
have_pg_server || missing+=(postgresql)
need_promtool=0
command -v promtool >/dev/null || [ -x .venv/bin/promtool ] || need_promtool=1
[ ${#missing[@]} -eq 0 ] && [ $need_promtool -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ $need_promtool -eq 1 ]; then
    echo "unpacking promtool from Debian's prometheus package into .venv/bin"
    work=$(mktemp -d)
    (cd "$work" && apt-get download -qq prometheus && dpkg-deb -x prometheus_*.deb root)
    install -m 755 "$work/root/usr/bin/promtool" .venv/bin/promtool
    rm -rf "$work"
  fi
else
  [ $need_promtool -eq 1 ] && missing+=("promtool (from Debian's prometheus package)")
  echo "missing: ${missing[*]}. Install them (e.g. sudo apt-get install ...)," >&2
  echo "or set PG_DSN to a PostgreSQL server you have." >&2
  exit 1
fi
