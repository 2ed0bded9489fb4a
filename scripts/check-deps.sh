#!/usr/bin/env bash
# The crate graph the design card names, checked with `cargo tree`: coordinator and executor are
# siblings over floe-engine; the executor links no catalog client; nothing but the binary
# depends on the executor or the coordinator. Fails, naming the edge, if a forbidden one returns.
# (reqwest is allowed: object_store speaks S3 with it.)
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
deps() { # the normal (non-dev, non-build) dependencies of package $1, one name per line
  cargo tree --locked -p "$1" -e normal --prefix none --format '{p}' 2>/dev/null \
    | awk '{print $1}' | sort -u
}
forbid() { # package, forbidden dependency, reason
  if deps "$1" | grep -qx "$2"; then
    echo "forbidden dependency: $1 -> $2 ($3)"
    cargo tree --locked -p "$1" -e normal -i "$2" 2>/dev/null | head -n 8
    fail=1
  fi
}

for client in floe-catalog sqlx iceberg-catalog-sql iceberg-catalog-rest \
              iceberg-catalog-glue aws-sdk-glue aws-config; do
  forbid floe-executor "$client" "executors never talk to a catalog"
  forbid floe-engine "$client" "the shared engine links no catalog client"
done
forbid floe-executor floe-coordinator "executor and coordinator are siblings"
forbid floe-coordinator floe-executor "executor and coordinator are siblings"
for crate in floe-proto floe-engine floe-catalog floe-coordinator; do
  forbid "$crate" floe-executor "only the binary depends on the executor"
done
for crate in floe-proto floe-engine floe-catalog floe-executor; do
  forbid "$crate" floe-coordinator "only the binary depends on the coordinator"
done
forbid floe-engine floe-catalog "the engine is below the catalog"
forbid floe-proto floe-engine "the wire contract depends on nothing of Floe's"

if [ "$fail" -ne 0 ]; then
  exit 1
fi
echo "crate graph ok: executor and coordinator are siblings over floe-engine; the executor links no catalog client"
