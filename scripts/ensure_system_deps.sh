#!/usr/bin/env bash
# Makes sure the system programs the stack and tests need are installed:
# redis-server/redis-cli, and PostgreSQL (unless PG_DSN names a server or one
# answers on 127.0.0.1:5432). Installs Debian's packages when it can (root and
# apt-get); otherwise says exactly what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
have_pg_server() {
  [ -n "${PG_DSN:-}" ] && return 0
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && return 0
  command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
have_pg_server || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing: ${missing[*]}. Install them (e.g. sudo apt-get install ${missing[*]})," >&2
  echo "or set PG_DSN to a PostgreSQL server you have." >&2
  exit 1
fi
