#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian machine: PostgreSQL 15 server
# binaries, an unprivileged `postgres` user (PostgreSQL refuses to run as root), zstd, and
# (with --s3) the s3s-fs S3 server the tests use. Safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || need+=(postgresql-contrib-15)
command -v runuser >/dev/null || need+=(util-linux)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || $SUDO useradd --system --create-home --shell /bin/bash postgres
if [ "${1:-}" = "--s3" ] && ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  # 0.14.1: later versions need a newer rustc than 1.95.
  cargo install s3s-fs@0.14.1 --features binary
fi
