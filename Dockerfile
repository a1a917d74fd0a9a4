# The connector's image, built as Airbyte builds a manifest-only connector (airbyte-ci's
# build_image/steps/manifest_only_connectors.py): metadata.yaml's connectorBuildOptions.baseImage, the
# stock airbyte/source-declarative-manifest (SDM) image at manifest.yaml's `version:`, with manifest.yaml
# and components.py in /airbyte/integration_code/source_declarative_manifest/, owned by the base
# image's user, and the SDM's entry point. Nothing is installed: the SDM's own main.py finds the
# manifest there and imports `source_declarative_manifest.components` from the same folder.
#
# Build it with `make image`, which passes BASE_IMAGE (metadata.yaml's baseImage unless overridden,
# e.g. by the stand-in scripts/build_base_image.sh makes) and CONNECTOR_VERSION (metadata.yaml's
# dockerImageTag). The build runs nothing and needs no network.
ARG BASE_IMAGE

FROM ${BASE_IMAGE}
ARG CONNECTOR_VERSION
LABEL io.airbyte.name=airbyte/source-klarna \
      io.airbyte.version=${CONNECTOR_VERSION}
# As airbyte-ci: the base's working directory (/airbyte/integration_code) and user (airbyte) stay, the
# entry point is set again, the SDM's main.py. (airbyte-ci's newest wraps it in `ddtrace-run`, which
# needs ddtrace in the base image; airbyte-cdk installs it only with its manifest-server extra, which
# the SDM image does not install, so this does not wrap it.)
# Few instructions: on Docker's classic builder each one copies the whole file system once more on
# the `vfs` storage driver.
ENV AIRBYTE_ENTRYPOINT="python /airbyte/integration_code/main.py"
ENTRYPOINT ["python", "/airbyte/integration_code/main.py"]
COPY --chown=airbyte:airbyte manifest.yaml components.py /airbyte/integration_code/source_declarative_manifest/
