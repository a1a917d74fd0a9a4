#!/usr/bin/env bash
# Rewrites constraints.txt: resolves the connector's wheel with its dev and demo extras and the CDK
# version manifest.yaml declares (`version:`), in a fresh virtual environment, and pins every package
# that resolution installed. `make install` and `make wheelhouse` (so the Docker image) install under
# these pins: the image's Python holds exactly the runtime packages the tests ran.
#
# Usage: scripts/update_constraints.sh   (or `make constraints`); PYTHON picks the interpreter (3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
cdk_version=$(sed -n 's/^version:[[:space:]]*//p' manifest.yaml)
[ -n "$cdk_version" ] || { echo "manifest.yaml has no top-level version:" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/source-klarna-constraints.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip build
"$work/venv/bin/python" -m build --wheel --outdir "$work/dist" . > /dev/null
wheel=$(ls "$work"/dist/*.whl)
"${pip[@]}" install -q "$wheel[dev,demo]" "airbyte-cdk==$cdk_version"

{
  echo "# Every package \`make install\` puts into .venv, pinned; the Docker image installs the connector's"
  echo "# runtime part of it (\`make wheelhouse\`). airbyte-cdk is manifest.yaml's \`version:\`."
  echo "# Resolved with $("$work/venv/bin/python" -c 'import platform; print("Python", platform.python_version())'): regenerate with \`make constraints\`"
  echo "# (scripts/update_constraints.sh) after changing the CDK version or a dependency."
  # --all: setuptools too (airbyte-cdk requires it), and pip.
  "${pip[@]}" freeze --all --exclude source-klarna
} > constraints.txt.partial
mv constraints.txt.partial constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages, airbyte-cdk==$cdk_version"
