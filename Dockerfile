# The connector's image, built as Airbyte builds a Python connector (the template
# docker-images/Dockerfile.python-connector of the Airbyte repository): the package installed into
# the base image's Python, the code in /airbyte/integration_code, `source-klarna` as the entry point,
# run as the base image's `airbyte` user. Build it with `make image`, which passes BASE_IMAGE
# (metadata.yaml's connectorBuildOptions.baseImage unless overridden) and CONNECTOR_VERSION
# (metadata.yaml's dockerImageTag).
#
# The build needs no network: every package comes from build/wheelhouse (`make wheelhouse`: the
# connector's wheel and its dependencies at the versions constraints.txt pins).
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS builder
ARG CONNECTOR_VERSION
WORKDIR /airbyte/integration_code
COPY build/wheelhouse/ ./wheelhouse/
COPY constraints.txt main.py manifest.yaml metadata.yaml ./
RUN test -n "${CONNECTOR_VERSION}" \
    && python -m pip install --no-cache-dir --no-index --find-links ./wheelhouse --constraint constraints.txt \
        "source-klarna==${CONNECTOR_VERSION}" \
    && mv "wheelhouse/source_klarna-${CONNECTOR_VERSION}-py3-none-any.whl" . \
    && rm -rf wheelhouse \
    && printf '#!/bin/sh\nexec source-klarna "$@"\n' > entrypoint.sh \
    && chmod 755 entrypoint.sh

# Only what the connector runs: the packages pip put into /usr/local and the code, not the wheelhouse.
# The settings come before the files: on Docker's classic builder each instruction copies the whole
# file system once more, which on the `vfs` storage driver costs seconds per hundred MB.
FROM ${BASE_IMAGE}
ARG CONNECTOR_VERSION
WORKDIR /airbyte/integration_code
LABEL io.airbyte.name=airbyte/source-klarna \
      io.airbyte.version=${CONNECTOR_VERSION}
ENV AIRBYTE_ENTRYPOINT=/airbyte/integration_code/entrypoint.sh
ENTRYPOINT ["/airbyte/integration_code/entrypoint.sh"]
USER airbyte
COPY --from=builder /usr/local /usr/local
COPY --from=builder /airbyte/integration_code ./
