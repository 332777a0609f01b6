# The operator's image: `mcp-remediator run` (Kopf and the alert receiver) as a non-root
# user on a read-only root filesystem (manifests/manager/deployment.yaml). `make e2e` builds
# it and loads it into kind.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mcp-remediator
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/mcp-remediator/bin/pip install .

# The runtime stage gets the installed virtualenv only: no sources, no build leftovers.
FROM python:3.11-slim
ENV PATH=/opt/mcp-remediator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/mcp-remediator /opt/mcp-remediator
# A numeric uid (no passwd entry needed) lets Kubernetes verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["mcp-remediator"]
CMD ["run"]
