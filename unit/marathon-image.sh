#!/usr/bin/env bash
# Builds the image unit/marathon-app.json runs, with no registry and no base image:
# the binary, the shared libraries it links (ldd) and the host's CA bundle (for an
# https Marathon), imported with `docker import`. For a registry, unit/Dockerfile
# builds the same thing FROM debian.
#
#   unit/marathon-image.sh [BINARY] [IMAGE]
#     BINARY  default target/release/calico-medic (any build of it works)
#     IMAGE   default: the image named in unit/marathon-app.json
# Needs: docker (client for the engine that runs the app), jq, ldd.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-/usr/bin/docker}
BIN=${1:-target/release/calico-medic}
IMAGE=${2:-$(jq -r .container.docker.image unit/marathon-app.json)}
[[ -x $BIN ]] || { echo "marathon-image.sh: no executable $BIN (cargo build --release)" >&2; exit 2; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# /etc/calico-medic is where the app mounts the host's config; /tmp for nothing in
# particular (the root is read-only in the app).
mkdir -p "$root/usr/bin" "$root/etc/calico-medic" "$root/tmp"
cp "$BIN" "$root/usr/bin/calico-medic"
for lib in $(ldd "$BIN" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
done
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -f $ca ]]; then
        mkdir -p "$root$(dirname "$ca")" && cp -L "$ca" "$root$ca"
    fi
done
tar -C "$root" -c . | "$DOCKER" import \
    -c 'ENTRYPOINT ["/usr/bin/calico-medic"]' -c 'CMD ["run"]' -c 'EXPOSE 9637' \
    -c "LABEL org.opencontainers.image.title=calico-medic" - "$IMAGE" >/dev/null
echo "$IMAGE"
