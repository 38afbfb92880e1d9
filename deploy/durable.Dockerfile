# The durable binary alone: agent, sink, load generator, CLI and health
# probe. Built on the host (`make images`), so nothing is pulled.
FROM scratch
COPY bin/durable /durable
USER 65534:65534
ENTRYPOINT ["/durable"]
