# etcd v3.7.3 for docker-compose.yml, built from the etcd server module that
# go.mod already requires (its root package is the etcd binary):
#
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o deploy/etcd go.etcd.io/etcd/server/v3
#   docker build -t soloist-etcd:3.7.3 -f deploy/etcd.Dockerfile deploy
FROM scratch
COPY etcd /usr/local/bin/etcd
COPY --chown=65532:65532 data-dir.txt /var/lib/etcd/README
USER 65532:65532
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
ENTRYPOINT ["/usr/local/bin/etcd"]
