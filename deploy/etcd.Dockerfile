# etcd built from the go.etcd.io/etcd/server/v3 module durable already
# depends on, plus the durable binary for its health probe (a scratch image
# has no shell or etcdctl).
FROM scratch
COPY bin/etcd /etcd
COPY bin/durable /durable
ENTRYPOINT ["/etcd"]
