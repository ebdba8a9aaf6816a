#!/usr/bin/env bash
# Builds Kubernetes' end-to-end test binary, e2e.test (`go test -c
# k8s.io/kubernetes/test/e2e`), and the ginkgo CLI that runs it in parallel, at
# the versions hack/kube-tools pins, into the same cache as hack/build-kube.sh:
#   ${PODNET_KUBE_CACHE:-$HOME/.cache/podnet/kube/<version>}/{e2e.test,ginkgo}
# kube-tools' go.sum covers the packages its tools import, not e2e's test-only
# imports, so the build runs on a copy of the module with -mod=mod (the go
# command adds the missing sums there; versions come from k8s.io/kubernetes'
# own requirements, so the result does not drift). First build: ~7 minutes on
# the 2-core machine with kube-apiserver already built (169 MB binary).
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/hack/kube-tools"
export PATH="$PATH:/usr/local/go/bin"

version="$(cd "$tools" && go list -mod=readonly -m -f '{{.Version}}' k8s.io/kubernetes)"
out="${PODNET_KUBE_CACHE:-${HOME:-/root}/.cache/podnet/kube/$version}"
stamp="$version $(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -d' ' -f1)"
dst="$out/e2e.test"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if [ -x "$dst" ] && [ -x "$out/ginkgo" ] && [ "$(cat "$dst.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$dst"
  echo "$out/ginkgo"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$tools/go.mod" "$tools/go.sum" "$work/"
echo "build-e2e: building e2e.test $version into $out (the first build takes ~7 minutes)" >&2
start=$SECONDS
(cd "$work" && CGO_ENABLED=0 go test -mod=mod -c -o "$dst.tmp" k8s.io/kubernetes/test/e2e)
# ginkgo at the version k8s.io/kubernetes requires (e2e.test speaks its protocol).
(cd "$work" && CGO_ENABLED=0 go build -mod=mod -o "$out/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo)
mv -f "$out/ginkgo.tmp" "$out/ginkgo"
mv -f "$dst.tmp" "$dst"
echo "$stamp" >"$dst.stamp.tmp" && mv -f "$dst.stamp.tmp" "$dst.stamp"
echo "build-e2e: built e2e.test and ginkgo in $((SECONDS - start)) s" >&2
echo "$dst"
echo "$out/ginkgo"
