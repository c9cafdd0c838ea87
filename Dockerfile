# syntax=docker/dockerfile:1
# remediator's image: a wheel built in a throwaway stage, installed into a venv that is copied alone into a
# clean python:3.11-slim, run as an unprivileged user. See docs/operations.md, "Deploying", for socket access.
#
#   docker build -t remediator .
#   docker run -d --name remediator -p 9095:9095 -e REMEDIATOR_SERVER__TOKEN=... \
#     -e REMEDIATOR_DOCKER__HOST=tcp://docker-proxy:2375 -v remediator-state:/var/lib/remediator remediator

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the wheel, and a venv holding it and its dependencies (all of them ship binary wheels) ---------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY remediator ./remediator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/remediator \
 && /opt/remediator/bin/pip install /wheels/remediator-*.whl \
 && /opt/remediator/bin/pip uninstall -y pip setuptools

# --- runtime: no compiler, no pip, no source tree --------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN groupadd --system --gid "${UID}" remediator \
 && useradd --system --uid "${UID}" --gid remediator --home-dir /var/lib/remediator --shell /usr/sbin/nologin remediator \
 && install -d -o remediator -g remediator -m 0750 /var/lib/remediator
COPY --from=builder /opt/remediator /opt/remediator
# The shipped policies are the default; mount your own directory over /etc/remediator/policies.
COPY policies /etc/remediator/policies
ENV PATH=/opt/remediator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REMEDIATOR_POLICIES_DIR=/etc/remediator/policies \
    REMEDIATOR_STATE_DIR=/var/lib/remediator \
    REMEDIATOR_LOG__FORMAT=json
WORKDIR /var/lib/remediator
VOLUME ["/var/lib/remediator"]
# Non-root. To reach a mounted /var/run/docker.sock, add the socket's group at run time
# (docker run --group-add "$(stat -c %g /var/run/docker.sock)"); better, talk to a socket proxy over TCP.
USER ${UID}:${UID}
EXPOSE 9095
# Liveness only (GET /healthz); the proxy handler is empty so that *_proxy variables never reroute it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('REMEDIATOR_SERVER__PORT', '9095'), timeout=4)"]
ENTRYPOINT ["remediator"]
CMD ["serve", "--host", "0.0.0.0"]
