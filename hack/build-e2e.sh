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
# Each artifact has its own stamp, so that a failed build of one does not make
# the next run rebuild the others.
current() { [ -x "$out/$1" ] && [ "$(cat "$out/$1.stamp" 2>/dev/null)" = "$stamp" ]; }
if current e2e.test && current ginkgo && current kubectl; then
  printf '%s\n' "$dst" "$out/ginkgo" "$out/kubectl"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$tools/go.mod" "$tools/go.sum" "$work/"
start=$SECONDS
# build NAME CMD...: runs CMD (which writes $out/NAME.tmp) in the module copy
# unless NAME is current, then moves the result and its stamp into place.
build() {
  local name="$1"
  shift
  current "$name" && return 0
  echo "build-e2e: building $name $version" >&2
  (cd "$work" && CGO_ENABLED=0 "$@")
  mv -f "$out/$name.tmp" "$out/$name"
  echo "$stamp" >"$out/$name.stamp.tmp" && mv -f "$out/$name.stamp.tmp" "$out/$name.stamp"
}
build e2e.test go test -mod=mod -c -o "$out/e2e.test.tmp" k8s.io/kubernetes/test/e2e # ~7 minutes the first time
# ginkgo at the version k8s.io/kubernetes requires (e2e.test speaks its protocol).
build ginkgo go build -mod=mod -o "$out/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
build kubectl go build -mod=mod -o "$out/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
echo "build-e2e: built in $((SECONDS - start)) s" >&2
printf '%s\n' "$dst" "$out/ginkgo" "$out/kubectl"
