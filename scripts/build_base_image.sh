#!/usr/bin/env bash
# Builds a stand-in for Airbyte's Python connector base image (metadata.yaml's
# connectorBuildOptions.baseImage) from Debian's packages, for machines that cannot pull from Docker
# Hub: `make image BASE_IMAGE=<the tag given here>` then builds the connector on it.
#
# What the Dockerfile relies on, as the real base has it: Python 3.11 with pip installing into
# /usr/local (Debian's Python, its "externally managed" marker removed), `python` on PATH, and an
# `airbyte` user (uid 1000) owning /airbyte. The real base's Python is a build of its own in
# /usr/local; the connector's image holds the same packages on either.
#
# Usage: scripts/build_base_image.sh TAG   (as root: debootstrap and chroot need it)
# DEBIAN_MIRROR overrides the mirror; by default, the Debian mirror apt uses on this machine.
set -euo pipefail

tag=${1:?usage: scripts/build_base_image.sh TAG}
suite=bookworm  # the Debian release the real base image is built on (Python 3.11)

apt_mirror() {
  # The first non-security Debian URI of apt's sources (deb822 .sources files, then sources.list).
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v -- '-security' | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

for tool in debootstrap docker; do
  command -v "$tool" > /dev/null || { echo "$tool is missing: apt-get install -y ${tool/docker/docker.io}" >&2; exit 1; }
done
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/source-klarna-base.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
chmod 755 "$rootfs"  # it becomes the image's /, which every user must be able to enter (mktemp made it 0700)

echo "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
  "$suite" "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# pip may install into the system Python (into /usr/local, Debian's scheme for pip as root).
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
chroot "$rootfs" useradd --uid 1000 --user-group --create-home --shell /bin/bash airbyte
mkdir -p "$rootfs/airbyte"
chroot "$rootfs" chown airbyte:airbyte /airbyte
# What a slim image leaves out: the downloaded packages and apt's lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "stand-in for Airbyte's python-connector-base: Debian $suite, Python 3.11, user airbyte (uid 1000)" \
  - "$tag"
docker image inspect --format "built $tag: {{.Size}} bytes" "$tag"
