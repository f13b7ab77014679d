#!/usr/bin/env bash
# Builds the worker image (container/Dockerfile) on this machine with podman, and checks it runs:
# `render-worker --help`, then bpy renders a frame inside the image as the image's user (uid 1000).
#   make worker-image-local            (or: scripts/worker_image_local.sh)
#
# Why: the image is built for real only by CodeBuild at deploy time; this keeps the Dockerfile building between
# deploys (tests/test_worker_image.py runs it when podman is present). It does not depend on what the Dockerfile
# installs (one bpy runtime or several): it builds the file as it is and checks the entry point and a render.
#
# The stand-in base: when the Dockerfile's pinned base image (its first FROM) cannot be pulled (no container
# registry reachable, as in this project's sandboxes), a Debian bookworm root file system made with debootstrap
# (Debian's own packages: python3 3.11, pip, apt) is imported and tagged with the base's name, so the Dockerfile
# builds unchanged. Its Python is Debian's 3.11 in /usr/bin, not the official image's 3.11 in /usr/local; pip may
# install into it (PIP_BREAK_SYSTEM_PACKAGES). The stand-in is built once and kept (podman images), as is the layer
# cache, so a rebuild after a change to container/ redoes only the layers after it.
#
# Settings (environment):
#   PODMAN="podman"            the command; add global options for rootless or nested sandboxes, e.g.
#                              PODMAN="podman --storage-driver vfs --cgroup-manager cgroupfs"
#   BUILD_OPTS="--isolation chroot"   `podman build` options. chroot isolation runs the RUN steps without an OCI
#                              runtime (crun), which nested sandboxes often refuse ("cgroups in hybrid mode not
#                              supported", setrlimit EPERM without CAP_SYS_RESOURCE); give BUILD_OPTS="" for the default
#   IMAGE=render-on-aws-worker:local   the tag to build
#   STANDIN=auto|always|never  auto: pull the base, build the stand-in when that fails
#   DEBIAN_MIRROR=http://deb.debian.org/debian
#   HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   certificates the stand-in trusts (the host's)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
read -r -a PODMAN_CMD <<<"${PODMAN:-podman}"
read -r -a BUILD_EXTRA <<<"${BUILD_OPTS---isolation chroot}"
IMAGE=${IMAGE:-render-on-aws-worker:local}
STANDIN=${STANDIN:-auto}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' container/Dockerfile | head -n 1)
CACHE="$ROOT/build/worker-image"
say() { echo "worker-image-local: $*"; }

command -v "${PODMAN_CMD[0]}" >/dev/null || { say "no ${PODMAN_CMD[0]} command (apt-get install podman)"; exit 3; }
[ -n "$BASE" ] || { say "container/Dockerfile names no FROM image"; exit 2; }

build_standin() {
    # debootstrap's minbase plus what the official python image has that the Dockerfile uses: python, pip, venv
    # (the image's extra Blender runtimes live in venvs), useradd.
    command -v debootstrap >/dev/null || { say "no debootstrap command (apt-get install debootstrap)"; exit 3; }
    mkdir -p "$CACHE"
    local tarball="$CACHE/bookworm-rootfs-$STANDIN_VERSION.tar"
    if [ ! -s "$tarball" ]; then
        local rootfs="$CACHE/rootfs"
        rm -rf "$rootfs"
        say "making a Debian bookworm root file system with debootstrap (once; cached in $tarball)"
        debootstrap --variant=minbase \
            --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap.log"; say "debootstrap failed (log: $CACHE/debootstrap.log)"; exit 1; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    say "importing the stand-in as $BASE"
    "${PODMAN_CMD[@]}" import \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "render-on-aws stand-in $STANDIN_VERSION for $BASE: Debian bookworm (debootstrap), python3 from Debian" \
        "$tarball" render-on-aws-standin:rootfs >/dev/null
    # The host's CA bundle, so HTTPS works behind the same inspecting proxy as the host (sandboxes): the stand-in
    # only; the real base keeps its own certificates.
    local layer
    layer=$(mktemp -d)
    cp "${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$layer/ca-certificates.crt"
    printf 'FROM render-on-aws-standin:rootfs\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n' \
        >"$layer/Containerfile"
    "${PODMAN_CMD[@]}" build --pull=never ${BUILD_EXTRA[@]+"${BUILD_EXTRA[@]}"} --tag "$BASE" "$layer" >/dev/null
    rm -rf "$layer"
}

STANDIN_VERSION=v2  # raise when the stand-in's packages change: an older stand-in is then made again
base_comment=$("${PODMAN_CMD[@]}" image inspect --format '{{.Comment}}' "$BASE" 2>/dev/null || true)
if [[ "$base_comment" == "render-on-aws stand-in"* && "$base_comment" != *"stand-in $STANDIN_VERSION for"* ]]; then
    say "base $BASE is an older render-on-aws stand-in: making it again"
    build_standin
elif "${PODMAN_CMD[@]}" image exists "$BASE"; then
    say "base $BASE is here ($("${PODMAN_CMD[@]}" image inspect --format '{{.Comment}}' "$BASE" | head -c 60))"
elif [ "$STANDIN" != always ] && timeout 60 "${PODMAN_CMD[@]}" pull --quiet "$BASE" >/dev/null 2>&1; then
    say "pulled $BASE"
elif [ "$STANDIN" = never ]; then
    say "cannot pull $BASE and STANDIN=never"; exit 1
else
    say "cannot pull $BASE: building a stand-in from Debian bookworm"
    build_standin
fi

say "building $IMAGE from container/Dockerfile"
started=$(date +%s)
# --network host: the RUN steps reach Debian's and PyPI's servers without a network namespace of their own
# (sandboxes often cannot create one); --layers keeps the cache so a rebuild redoes only what changed.
"${PODMAN_CMD[@]}" build --layers --network host --pull=never ${BUILD_EXTRA[@]+"${BUILD_EXTRA[@]}"} \
    --file container/Dockerfile --tag "$IMAGE" .
say "built in $(($(date +%s) - started)) s"

# The checks run as the image's user, with its environment. `podman run` needs an OCI runtime that can start a
# container here; where it cannot (see BUILD_OPTS), the same commands run as RUN steps of a throwaway build on
# top of the image, which inherit its USER, WORKDIR and ENV.
ENTRYPOINT_JSON=$("${PODMAN_CMD[@]}" image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
RENDER_CHECK='
import os, tempfile, bpy
assert os.getuid() == 1000, os.getuid()
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 4
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 36, 100
out = os.path.join(tempfile.mkdtemp(), "frame.png")
scene.render.filepath = out
bpy.ops.render.render(write_still=True)
print("rendered", out, os.path.getsize(out), "bytes as uid", os.getuid(), "with Blender", bpy.app.version_string)
'
if run_error=$("${PODMAN_CMD[@]}" run --rm --network host "$IMAGE" --help 2>&1 >/dev/null); then
    say "checked: render-worker --help (podman run)"
    say "checking: a 64x36 Cycles frame rendered inside the image as its user (podman run)"
    "${PODMAN_CMD[@]}" run --rm --network host --entrypoint python "$IMAGE" -c "$RENDER_CHECK" | grep '^rendered'
else
    say "podman run cannot start a container here ($(echo "$run_error" | tail -n 1)); checking in build steps"
    check_dir=$(mktemp -d)
    trap 'rm -rf "$check_dir"' EXIT
    printf '%s' "$RENDER_CHECK" >"$check_dir/render_check.py"
    {
        echo "FROM $IMAGE"
        echo "COPY render_check.py /tmp/render_check.py"
        echo "RUN $(echo "$ENTRYPOINT_JSON" | sed 's/]$/, "--help"]/')"
        echo 'RUN ["python", "/tmp/render_check.py"]'
    } >"$check_dir/Containerfile"
    "${PODMAN_CMD[@]}" build --layers=false --no-cache --network host --pull=never ${BUILD_EXTRA[@]+"${BUILD_EXTRA[@]}"} \
        --file "$check_dir/Containerfile" --tag render-on-aws-worker-check:local "$check_dir" >"$check_dir/log" 2>&1 \
        || { tail -n 30 "$check_dir/log"; say "the checks failed"; exit 1; }
    grep -q 'usage: ' "$check_dir/log" || { tail -n 30 "$check_dir/log"; say "--help printed no usage"; exit 1; }
    say "checked: render-worker --help (build step)"
    grep '^rendered' "$check_dir/log" || { tail -n 30 "$check_dir/log"; say "the render check printed nothing"; exit 1; }
    "${PODMAN_CMD[@]}" rmi render-on-aws-worker-check:local >/dev/null 2>&1 || true
fi

size=$("${PODMAN_CMD[@]}" image inspect --format '{{.Size}}' "$IMAGE")
say "OK: $IMAGE is $((size / 1000000)) MB ($(awk "BEGIN {printf \"%.2f\", $size / 1e9}") GB)"
