#!/usr/bin/env bash
# Builds a stand-in for airbyte/source-declarative-manifest (the SDM image, metadata.yaml's
# connectorBuildOptions.baseImage) from Debian's packages and the host's wheelhouse, for machines that
# cannot pull from Docker Hub: `make image BASE_IMAGE=<the tag given here>` then builds the connector
# on it as on the real one.
#
# The real image is the airbyte-python-cdk repository's Dockerfile: python-connector-base (Python, pip,
# a system user `airbyte` uid 1000, /airbyte owned by it), airbyte-cdk installed into that Python, and
#   /airbyte/integration_code/main.py                          `from source_declarative_manifest.run import run`
#   /airbyte/integration_code/source_declarative_manifest/     __init__.py, run.py (the CDK's
#       cli/source_declarative_manifest/_run.py) and spec.json
# with /airbyte chowned to 1000:1000, WORKDIR /airbyte/integration_code, USER airbyte, and
# ENTRYPOINT ["python", "/airbyte/integration_code/main.py"] (AIRBYTE_ENTRYPOINT the same, as a string).
# run.py runs a local manifest when source_declarative_manifest/manifest.yaml exists: the connector's
# image adds it and components.py there. This stand-in is all of that on Debian bookworm's Python 3.11
# (the real one's Python is its base's own build, in /usr/local), airbyte-cdk and its dependencies at the
# versions constraints.txt pins, installed from WHEELHOUSE (`make wheelhouse`) into /usr/local: no
# network is needed past debootstrap. No poetry (the real base has it; nothing runs it).
#
# Usage: scripts/build_base_image.sh TAG WHEELHOUSE CDK_VERSION   (as root: debootstrap and chroot need it)
# DEBIAN_MIRROR overrides the mirror; by default, the Debian mirror apt uses on this machine.
set -euo pipefail

usage="usage: scripts/build_base_image.sh TAG WHEELHOUSE CDK_VERSION"
tag=${1:?$usage}
wheelhouse=${2:?$usage}
cdk_version=${3:?$usage}
suite=bookworm  # Debian's release with Python 3.11, the version constraints.txt was resolved for
constraints="$(cd "$(dirname "$0")/.." && pwd)/constraints.txt"
code=/airbyte/integration_code

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
ls "$wheelhouse"/airbyte_cdk-"$cdk_version"-*.whl > /dev/null 2>&1 \
  || { echo "$wheelhouse has no airbyte-cdk $cdk_version wheel: run \`make wheelhouse\`" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/source-klarna-base.XXXXXX")
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
chmod 755 "$rootfs"  # it becomes the image's /, which every user must be able to enter (mktemp made it 0700)

echo "debootstrap $suite from $mirror"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
  "$suite" "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }

# python-connector-base: the `airbyte` system user and group (uid and gid 1000, no home directory),
# /airbyte, and pip's cache directory. pip may install into the system Python (into /usr/local,
# Debian's scheme for pip as root): the "externally managed" marker goes.
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
chroot "$rootfs" groupadd --system --gid 1000 airbyte
chroot "$rootfs" useradd --system -K SYS_UID_MAX=1000 --uid 1000 --gid airbyte --no-create-home --home-dir /home/airbyte \
  --shell /usr/sbin/nologin airbyte
mkdir -m 755 "$rootfs/custom_cache" "$rootfs/airbyte"

# The SDM layer: airbyte-cdk from the wheelhouse, then the integration code laid out as the SDM's
# Dockerfile lays it out.
echo "debootstrap done in $((SECONDS - start)) s; airbyte-cdk $cdk_version from $wheelhouse"
mkdir "$rootfs/tmp/wheelhouse"
cp "$wheelhouse"/*.whl "$constraints" "$rootfs/tmp/wheelhouse/"
# `env -i`: none of the host's pip settings (PIP_* variables: indexes, certificates) reach the image's pip.
chroot "$rootfs" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
  python -m pip install --quiet --no-cache-dir --no-index --root-user-action=ignore --disable-pip-version-check \
  --find-links /tmp/wheelhouse --constraint /tmp/wheelhouse/constraints.txt "airbyte-cdk==$cdk_version"
rm -rf "$rootfs/tmp/wheelhouse"
sdm_package=$(chroot "$rootfs" env -i PATH=/usr/bin:/bin python -c 'import airbyte_cdk.cli.source_declarative_manifest as m; print(m.__path__[0])')
mkdir -p "$rootfs$code/source_declarative_manifest"
printf 'from source_declarative_manifest.run import run\n\nif __name__ == "__main__":\n    run()\n' > "$rootfs$code/main.py"
touch "$rootfs$code/source_declarative_manifest/__init__.py"
cp "$rootfs$sdm_package/_run.py" "$rootfs$code/source_declarative_manifest/run.py"
cp "$rootfs$sdm_package/spec.json" "$rootfs$code/source_declarative_manifest/"
chroot "$rootfs" chown -R 1000:1000 /airbyte
# What a slim image leaves out: the downloaded packages and apt's lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/root/.cache

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CACHE_DIR=/custom_cache/pip' \
  --change "WORKDIR $code" \
  --change "ENV AIRBYTE_ENTRYPOINT=\"python $code/main.py\"" \
  --change "ENTRYPOINT [\"python\", \"$code/main.py\"]" \
  --change 'USER airbyte' \
  --message "stand-in for airbyte/source-declarative-manifest:$cdk_version: Debian $suite, Python 3.11, airbyte-cdk $cdk_version, user airbyte (uid 1000)" \
  - "$tag"
docker image inspect --format "built $tag in $((SECONDS - start)) s: {{.Size}} bytes" "$tag"
