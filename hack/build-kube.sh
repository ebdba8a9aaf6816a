#!/usr/bin/env bash
# Builds Kubernetes binaries (default: kube-apiserver) from the k8s.io/kubernetes module
# pinned in hack/kube-tools/go.mod, into a cache outside the git tree:
#   ${PODNET_KUBE_CACHE:-$HOME/.cache/podnet/kube/<version>}/<binary>
# A binary already built there from the same go.mod and go.sum is kept as it is. The first
# kube-apiserver build took 4 min on an idle 2-core machine with empty Go caches (540 MB of
# modules, 2.7 GB of build cache, ~380 CPU-seconds: up to ~6.5 min next to other work),
# ~3 min with the modules downloaded; kube-proxy after it ~10 s.
# Concurrent runs (parallel test packages) wait for each other on a lock in the cache.
# Prints the path of each binary on stdout, one a line; progress goes to stderr.
# With PODNET_KUBE_NO_BUILD=1 nothing is built: a binary missing or out of date is an
# error (exit 3), for tests that skip rather than build (integration/cluster).
#
#   hack/build-kube.sh [kube-apiserver|kube-proxy|...]...
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/hack/kube-tools"
export PATH="$PATH:/usr/local/go/bin"

version="$(cd "$tools" && go list -mod=readonly -m -f '{{.Version}}' k8s.io/kubernetes)"
out="${PODNET_KUBE_CACHE:-${HOME:-/root}/.cache/podnet/kube/$version}"
# The stamp ties a binary to the module graph it was built from, so a changed pin
# rebuilds even when PODNET_KUBE_CACHE names a directory without the version.
stamp="$version $(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -d' ' -f1)"

[ $# -gt 0 ] || set -- kube-apiserver
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for kv in gitVersion="$version" gitMajor="$major" gitMinor="$minor" gitTreeState=clean \
  buildDate="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  ldflags+=" -X k8s.io/component-base/version.$kv"
done

for bin in "$@"; do
  case "$bin" in
    */*|.*|'') echo "build-kube: $bin: give a command name under k8s.io/kubernetes/cmd" >&2; exit 2 ;;
  esac
  dst="$out/$bin"
  if [ -x "$dst" ] && [ "$(cat "$dst.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$dst"
    continue
  fi
  if [ "${PODNET_KUBE_NO_BUILD:-}" = 1 ]; then
    echo "build-kube: $bin $version is not built in $out (make kube-node-tools builds it)" >&2
    exit 3
  fi
  echo "build-kube: building $bin $version into $out (the first build takes ~5 minutes)" >&2
  start=$SECONDS
  (cd "$tools" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags "$ldflags" -o "$dst.tmp" "k8s.io/kubernetes/cmd/$bin")
  mv -f "$dst.tmp" "$dst"
  echo "$stamp" >"$dst.stamp.tmp" && mv -f "$dst.stamp.tmp" "$dst.stamp"
  echo "build-kube: built $bin in $((SECONDS - start)) s" >&2
  echo "$dst"
done
