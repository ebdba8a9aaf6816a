# podnet image: podnetd, podnetctl and the CNI plugin, which podnetd copies to the
# host's CNI bin dir at start (--cni-plugin-src). Built from this repository only:
#
#   docker build -t ghcr.io/podnet/podnet:$(git describe --always --dirty) \
#     --build-arg VERSION=$(git describe --always --dirty) .
#
# deploy/kubernetes/daemonset.yaml runs it; deploy/deploy_test.go runs this file's
# build commands and checks that the binaries are static and land where the
# DaemonSet expects them.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static binaries (no cgo: nothing to link against in the runtime image).
RUN CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-s -w -X github.com/podnet/podnet/daemon.Version=${VERSION}" \
      -o /out/podnetd ./cmd/podnetd && \
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-s -w -X github.com/podnet/podnet/daemon.Version=${VERSION}" \
      -o /out/podnetctl ./cmd/podnetctl && \
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-s -w -X github.com/podnet/podnet/daemon.Version=${VERSION}" \
      -o /out/podnet ./cni-plugin

# No shell, no package manager, no libc: the three binaries, CA certificates and
# /etc/passwd. Its default user is nonroot (65532), so the image run by mistake
# changes nothing; the DaemonSet runs podnetd as uid 0 with NET_ADMIN and
# SYS_ADMIN only, because Kubernetes gives added capabilities to uid 0 only and
# the host directories podnetd writes belong to root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/podnetd /out/podnetctl /usr/local/bin/
# Not in PATH: it is meant to run on the host, called by the container runtime.
COPY --from=build /out/podnet /usr/local/lib/podnet/podnet
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podnetd"]
