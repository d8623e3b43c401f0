#!/usr/bin/env bash
# Builds ferroserve's container image with no registry and no base image:
#   1. debootstrap makes a Debian tree from Debian's packages (Python, numpy, pip);
#   2. pip in that tree installs the ferroserve wheel (binary and Python package), and ONNX
#      Runtime's shared library comes from the onnxruntime wheel on PyPI;
#   3. rootfs.py keeps only what runs (no dpkg, apt or perl) and adds the user `ferroserve`;
#   4. umoci makes it an OCI image (entrypoint `tini -- ferroserve serve`: tini is PID 1 and
#      reaps orphaned processes; uid 1000, ports 8080/8081), and skopeo writes it as an OCI
#      archive and as a Docker archive.
#
#   deploy/image/build.sh [WHEEL]     # default: the newest target/wheels/ferroserve-*.whl
#
# Writes target/image/ferroserve.oci.tar (`podman load`, `skopeo`) and
# target/image/ferroserve.docker.tar (`docker load`: Docker Engines before 25 load no OCI
# archives), tagged ferroserve:VERSION. Needs root (debootstrap chroots), debootstrap, umoci and
# skopeo (Debian packages) and a Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
# The Debian tree is kept in target/image/debian and reused while its package list is unchanged.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/deploy/image"
work="$root/target/image"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
ort_version=1.23.2
packages=python3,python3-numpy,python3-pip,tini
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

wheel="${1:-$(ls -t "$root"/target/wheels/ferroserve-*.whl 2>/dev/null | head -n1)}"
[[ -f "$wheel" ]] || { echo "build.sh: no wheel; run scripts/build-wheel.sh first" >&2; exit 1; }
version="$(basename "$wheel" | cut -d- -f2)"
tag="ferroserve:$version"
for tool in debootstrap umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
mkdir -p "$work"

# 1. The Debian tree.
tree="$work/debian"
if [[ "$(cat "$tree/.packages" 2>/dev/null || true)" != "$suite $packages" ]]; then
    rm -rf "$tree"
    echo "build.sh: debootstrap $suite ($packages)" >&2
    debootstrap --variant=minbase --include="$packages" "$suite" "$tree" "$mirror" >"$work/debootstrap.log" \
        || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    echo "$suite $packages" >"$tree/.packages"
fi

# 2. ferroserve and ONNX Runtime's library, into /usr/local of the tree.
rm -rf "$tree/usr/local" && mkdir -p "$tree/usr/local/lib" "$tree/tmp/wheels"
cp "$wheel" "$tree/tmp/wheels/"
chroot "$tree" python3 -m pip install -q --no-deps --no-index --break-system-packages \
    "/tmp/wheels/$(basename "$wheel")"
rm -rf "$tree/tmp/wheels"
ort="$work/onnxruntime"
if ! ls "$ort"/onnxruntime-"$ort_version"-*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
        --python-version 3.11 -d "$ort" "onnxruntime==$ort_version"
fi
python3 - "$ort" "$tree/usr/local/lib" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    (name,) = [n for n in z.namelist() if os.path.basename(n).startswith("libonnxruntime.so.")]
    with z.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
ort_library="/usr/local/lib/libonnxruntime.so.$ort_version"

# 3. The image's files.
rootfs="$work/rootfs"
# libstdc++6: ONNX Runtime's library needs it (numpy does not).
# tini: PID 1, which reaps the orphans a model's subprocesses leave when their worker dies.
python3 "$here/rootfs.py" "$tree" "$rootfs" python3 python3-numpy libstdc++6 base-files tini >"$work/packages.txt"

# 4. The OCI image and its archives.
layout="$work/oci"
rm -rf "$layout" "$work/bundle"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$version" "$work/bundle" >/dev/null
umoci config --image "$layout:$version" \
    --config.entrypoint tini --config.entrypoint=-- \
    --config.entrypoint ferroserve --config.entrypoint serve \
    --config.user 1000:1000 --config.workingdir /home/ferroserve \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env "ORT_DYLIB_PATH=$ort_library" \
    --config.env PYTHONUNBUFFERED=1 \
    --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.stopsignal SIGTERM \
    --config.label org.opencontainers.image.title=ferroserve \
    --config.label "org.opencontainers.image.version=$version" \
    --author ferroserve
umoci gc --layout "$layout"
rm -rf "$work/bundle"
rm -f "$work/ferroserve.oci.tar" "$work/ferroserve.docker.tar"
skopeo --insecure-policy copy -q "oci:$layout:$version" "oci-archive:$work/ferroserve.oci.tar:$tag"
skopeo --insecure-policy copy -q "oci:$layout:$version" "docker-archive:$work/ferroserve.docker.tar:$tag"

size() { du -m --apparent-size "$1" | cut -f1; }
echo "build.sh: $tag: files $(du -sm "$rootfs" | cut -f1) MiB; OCI archive $(size "$work/ferroserve.oci.tar") MiB (compressed)" >&2
echo "$work/ferroserve.oci.tar"
