#!/usr/bin/env bash
# Builds Kubernetes' end-to-end test binary, e2e.test (`go test -c
# k8s.io/kubernetes/test/e2e`), the ginkgo CLI that runs it in parallel and the
# kubectl its specs shell out to (`kubectl exec`), at the versions
# hack/kube-tools pins, into the same cache as hack/build-kube.sh:
#   ${PODNET_KUBE_CACHE:-$HOME/.cache/podnet/kube/<version>}/{e2e.test,ginkgo,kubectl}
# kube-tools' go.sum covers the packages its tools import, not e2e's test-only
# imports, so the build runs on a copy of the module with -mod=mod (the go
# command adds the missing sums there; versions come from k8s.io/kubernetes'
# own requirements, so the result does not drift). First build: ~7 minutes on
# the 2-core machine with kube-apiserver already built (169 MB binary).
# kubectl takes ~30 s more. Prints the three paths on stdout (e2e.test, ginkgo,
# kubectl); progress goes to stderr.
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
stale=1
[ "$(cat "$dst.stamp" 2>/dev/null)" = "$stamp" ] && stale=0
if [ $stale = 0 ] && [ -x "$dst" ] && [ -x "$out/ginkgo" ] && [ -x "$out/kubectl" ]; then
  printf '%s\n' "$dst" "$out/ginkgo" "$out/kubectl"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$tools/go.mod" "$tools/go.sum" "$work/"
start=$SECONDS
if [ $stale = 1 ] || [ ! -x "$dst" ]; then
  echo "build-e2e: building e2e.test $version into $out (the first build takes ~7 minutes)" >&2
  (cd "$work" && CGO_ENABLED=0 go test -mod=mod -c -o "$dst.tmp" k8s.io/kubernetes/test/e2e)
  mv -f "$dst.tmp" "$dst"
fi
if [ $stale = 1 ] || [ ! -x "$out/ginkgo" ]; then
  # ginkgo at the version k8s.io/kubernetes requires (e2e.test speaks its protocol).
  (cd "$work" && CGO_ENABLED=0 go build -mod=mod -o "$out/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo)
  mv -f "$out/ginkgo.tmp" "$out/ginkgo"
fi
if [ $stale = 1 ] || [ ! -x "$out/kubectl" ]; then
  echo "build-e2e: building kubectl $version" >&2
  (cd "$work" && CGO_ENABLED=0 go build -mod=mod -o "$out/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
  mv -f "$out/kubectl.tmp" "$out/kubectl"
fi
echo "$stamp" >"$dst.stamp.tmp" && mv -f "$dst.stamp.tmp" "$dst.stamp"
echo "build-e2e: built in $((SECONDS - start)) s" >&2
printf '%s\n' "$dst" "$out/ginkgo" "$out/kubectl"
