# podnet — see README.md.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/podnet/podnet/daemon.Version=$(VERSION)

.PHONY: all build lab test test-unit bench-cni bench-services bench-vs-kube-proxy deps clean fmt vet kube-tools kube-node-tools e2e conformance images test-images

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/podnetd ./cmd/podnetd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/podnet ./cni-plugin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/podnetctl ./cmd/podnetctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/podnet-lab ./integration/cmd/podnet-lab

# Installs what a fresh Debian machine lacks (iproute2, nftables for `nft list` in tests).
deps:
	@./hack/install-deps.sh

# The main job: a 3-node sandboxed cluster, pods attached through libcni, the connectivity matrix.
# SOURCE=kube: the same lab with a real etcd + kube-apiserver as the source of cluster state
# instead of the cluster file (the first run builds kube-apiserver: ~5 minutes, once per machine).
SOURCE ?= file
lab: deps build
	$(BIN)/podnet-lab run --source $(SOURCE)

# Every test: unit tests, kernel tests (root, each package in its own sandbox), the lab
# as a test, then the e2e cluster (`make e2e`: it builds the kubelet nodes' binaries and
# images first, once per machine), with podnet and with the reference stack it is
# measured against (docs/conformance-reference.md), so that the comparison keeps working.
test: deps build
	$(GO) vet ./...
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/integration/cluster$$')
	$(MAKE) e2e
	$(MAKE) e2e E2E_NETWORK=reference

test-unit:
	$(GO) test -race -count=1 ./ipam/ ./daemon/... ./nft/ ./routing/

bench-cni: deps build
	./hack/bench-cni.sh

# podnetd with 1k, 10k and 50k services: cold start, one endpoint change, peak RSS,
# connect() through a VIP against direct (docs/benchmarks.md). As root; a quick run:
# make bench-services BENCH_ARGS='--services 1000 --changes 20 --connects 500'
BENCH_ARGS ?=
bench-services: deps build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/podnet-bench-services ./integration/cmd/podnet-bench-services
	$(BIN)/podnet-bench-services --bin $(BIN) $(BENCH_ARGS)

# podnetd against kube-proxy v1.37.2 (--proxy-mode=nftables), against one real
# kube-apiserver with 1k, 10k and 30k services x 4 endpoints: cold full sync, one
# EndpointSlice change, peak RSS (docs/benchmarks.md). As root; a quick run:
# make bench-vs-kube-proxy BENCH_ARGS='--services 1000 --changes 20'
bench-vs-kube-proxy: deps build kube-tools
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/podnet-bench-kube-proxy ./integration/cmd/podnet-bench-kube-proxy
	$(BIN)/podnet-bench-kube-proxy --bin $(BIN) $(BENCH_ARGS)

# kube-apiserver and kube-proxy v1.37.2, built from hack/kube-tools into
# ~/.cache/podnet/kube/v1.37.2 (PODNET_KUBE_CACHE= moves it) for the tests and
# benchmarks that run a real control plane (integration/kube). The first build takes
# ~5 minutes; later runs keep the binaries. Tests build what is missing themselves.
kube-tools:
	./hack/build-kube.sh kube-apiserver kube-proxy

# What the e2e cluster (integration/cluster, docs/e2e.md) runs besides kube-apiserver:
# kube-controller-manager, kube-scheduler and kubelet v1.37.2, into the same cache
# (~1 minute each after kube-apiserver, ~6 minutes from empty Go caches).
kube-node-tools: deps
	./hack/build-kube.sh kube-apiserver kube-controller-manager kube-scheduler kubelet

# The e2e cluster (docs/e2e.md): control plane + 2 kubelet/containerd nodes in a sandbox,
# podnet as their only network component (its DaemonSet from deploy/kubernetes/), CoreDNS,
# and the smoke test (pods across nodes, a Service by DNS name, exec); teardown, the
# machine checked unchanged. As root (else it skips). ~30 s with everything built; `make
# test` runs it last, and again with E2E_NETWORK=reference.
e2e: kube-node-tools images
	@if [ "$(E2E_NETWORK)" = reference ]; then ./hack/build-kube.sh kube-proxy >/dev/null; fi
	PODNET_E2E_NETWORK="$(E2E_NETWORK)" $(GO) test -race -count=1 -v -timeout 10m ./integration/cluster/

# Kubernetes' own sig-network conformance specs (docs/conformance.md) against the e2e
# cluster: builds e2e.test, ginkgo and kubectl v1.37.2 (hack/build-e2e.sh, ~7 minutes
# the first time), then runs all 47 `[sig-network] ... [Conformance]` specs, 2 at a time;
# the run fails unless every one passes. CONFORMANCE_SKIP_DNS=1 runs the 39 non-DNS ones.
# CONFORMANCE_NETWORK=reference runs them on the stack podnet replaces instead (reference
# CNI plugins + kube-proxy in nftables mode; docs/conformance-reference.md); E2E_NETWORK=
# reference does the same for make e2e. As root.
conformance: kube-node-tools images
	@set -e; bins="$$(./hack/build-e2e.sh)"; \
	if [ "$(CONFORMANCE_NETWORK)" = reference ]; then ./hack/build-kube.sh kube-proxy >/dev/null; fi; \
	PODNET_E2E_CONFORMANCE=1 PODNET_E2E_TEST="$$(echo "$$bins" | sed -n 1p)" \
	PODNET_E2E_GINKGO="$$(echo "$$bins" | sed -n 2p)" PODNET_E2E_KUBECTL="$$(echo "$$bins" | sed -n 3p)" \
	PODNET_E2E_SKIP_DNS="$(CONFORMANCE_SKIP_DNS)" PODNET_E2E_NETWORK="$(CONFORMANCE_NETWORK)" \
	$(GO) test -count=1 -v -timeout 70m -run TestConformance ./integration/cluster/

# The container images of the e2e cluster (docs/e2e-images.md): agnhost, busybox, pause,
# glibc-dns-testing and an nginx stand-in under the names the v1.37.2 e2e framework
# asks for, CoreDNS, and podnet's own, as tarballs for `ctr -n k8s.io images import` in
# ~/.cache/podnet/images (PODNET_IMAGE_CACHE= moves it), listed in images.json there.
# No registry: Go builds the binaries, Debian's packages give the tools. ~20 s from an
# empty image cache with warm Go caches, ~2 s when nothing changed.
images: deps
	cd hack/images && CGO_ENABLED=0 $(GO) run ./cmd/build-images

# hack/images' tests (its own module, outside `make test`): as root, builds the images,
# reads every tarball back, runs each image's tools in a chroot, imports them all into
# a throwaway containerd when one is installed. ~20 s.
test-images: deps
	cd hack/images && $(GO) test -count=1 ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
