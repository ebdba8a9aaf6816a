#!/usr/bin/env bash
# Times CNI ADD/DEL of 100 pods through libcni for podnet and for the reference
# plugins bridge + host-local, 1 and 10 at a time, inside a sandbox
# (unshare --net --mount): the machine's own network namespace is never touched.
# Run as root, after `make build` (make bench-cni does both). Extra arguments go
# to podnet-bench (e.g. --pods 50 --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-bin}
REF_VERSION=v1.10.0
REF_DIR="$BIN/ref"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-cni: needs root to create network namespaces" >&2
  exit 1
fi
for b in podnetd podnet; do
  [ -x "$BIN/$b" ] || { echo "bench-cni: $BIN/$b missing; run make build" >&2; exit 1; }
done

# The reference plugins, built once per version and cached. Built static and
# stripped like podnet's own binaries (and like upstream's release tarballs).
if [ "$(cat "$REF_DIR/VERSION" 2>/dev/null)" != "$REF_VERSION" ] ||
   [ ! -x "$REF_DIR/bridge" ] || [ ! -x "$REF_DIR/host-local" ]; then
  echo "bench-cni: building containernetworking/plugins $REF_VERSION bridge + host-local into $REF_DIR"
  mkdir -p "$REF_DIR"
  rm -f "$REF_DIR/VERSION"
  GOBIN="$(cd "$REF_DIR" && pwd)" CGO_ENABLED=0 "$GO" install -trimpath -ldflags '-s -w' \
    "github.com/containernetworking/plugins/plugins/main/bridge@$REF_VERSION" \
    "github.com/containernetworking/plugins/plugins/ipam/host-local@$REF_VERSION"
  echo "$REF_VERSION" >"$REF_DIR/VERSION"
fi

CGO_ENABLED=0 "$GO" build -trimpath -o "$BIN/podnet-bench" ./integration/cmd/podnet-bench
exec "$BIN/podnet-bench" --bin "$BIN" --ref-bin "$REF_DIR" "$@"
