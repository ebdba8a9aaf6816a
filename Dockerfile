# podnet image: podnetd, podnetctl and the CNI plugin (copied to the host's
# /opt/cni/bin by the DaemonSet's init container). Built from this repository only.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build

FROM debian:bookworm-slim
COPY --from=build /src/bin/podnetd /src/bin/podnetctl /src/bin/podnet /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/podnetd"]
