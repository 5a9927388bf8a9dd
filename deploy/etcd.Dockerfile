# etcd v3.7.3 (server and etcdctl) for docker-compose.yml, built from the
# etcd modules that go.mod already has as tools. From the repository's root:
#
#   docker build -t soloist-etcd:3.7.3 -f deploy/etcd.Dockerfile .
#
# Without a registry, the tests of integration/deploy build the "runtime"
# stage from binaries built on the host (`go build -o DIR/etcd
# go.etcd.io/etcd/server/v3` and `go build -o DIR/etcdctl
# go.etcd.io/etcd/etcdctl/v3`), as for deploy/Dockerfile. etcdctl is in
# the image for health checks (`etcdctl endpoint health`) and operators.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY deploy/data-dir.txt deploy/data-dir.txt
RUN mkdir -p /out \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/etcd go.etcd.io/etcd/server/v3 \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/etcdctl go.etcd.io/etcd/etcdctl/v3 \
 && cp deploy/data-dir.txt /out/data-dir.txt

FROM scratch AS runtime
LABEL org.opencontainers.image.title="soloist-etcd" \
      org.opencontainers.image.description="etcd v3.7.3 for Soloist's compose example" \
      org.opencontainers.image.source="https://github.com/soloist-dev/soloist" \
      org.opencontainers.image.version="3.7.3"
COPY --from=build /out/etcd /usr/local/bin/etcd
COPY --from=build /out/etcdctl /usr/local/bin/etcdctl
COPY --from=build --chown=65532:65532 /out/data-dir.txt /var/lib/etcd/README
USER 65532:65532
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
ENTRYPOINT ["/usr/local/bin/etcd"]
