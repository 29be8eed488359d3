# batchgen alone in an empty image: the static release binary (no shared
# library; TLS roots and a DNS resolver compiled in), run as user 65534.
# Building pulls nothing: build the binary first, then the image:
#
#   .ci/static-build
#   docker build -t batchgen .
#
# The binary needs a writable folder for --out (mount one) and, for runs on
# a bucket, a writable /tmp (`docker run --tmpfs /tmp`, an emptyDir in
# Kubernetes). Names resolve through the /etc/resolv.conf and /etc/hosts
# the runtime mounts; `localhost` is loopback without them.
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/batchgen /usr/local/bin/batchgen
ENV PATH=/usr/local/bin
USER 65534:65534
ENTRYPOINT ["batchgen"]
