# remediator's image: a wheel built in a throwaway stage, installed with the versions of requirements.lock into
# a venv that is copied alone into a clean python:3.11-slim, run as an unprivileged user. See
# docs/operations.md, "The image", for the package index, the port, TLS and socket access.
#
#   docker build -t remediator .
#   docker build --build-arg PIP_INDEX_URL=https://pypi.internal.example/simple -t remediator .
#   docker run -d --name remediator -p 9095:9095 -e REMEDIATOR_SERVER__TOKEN=... \
#     -e REMEDIATOR_DOCKER__HOST=tcp://docker-proxy:2375 -v remediator-state:/var/lib/remediator remediator

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the wheel, and a venv holding it and its dependencies (all of them ship binary wheels) ---------
FROM ${PYTHON_IMAGE} AS builder
# Where pip finds packages: PyPI unless given. A private index or mirror where PyPI is not reachable; the
# trusted host for one without a valid certificate. Build-time only: none of them reaches the runtime stage.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
# PIP_CONSTRAINT pins every install, the build backend in pip's isolated build environment included, to the
# versions CI tested (scripts/dev installs the tested venv from the same file).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_CONSTRAINT=/src/requirements.lock
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY remediator ./remediator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/remediator \
 && /opt/remediator/bin/pip install /wheels/remediator-*.whl \
 && /opt/remediator/bin/pip check \
 && /opt/remediator/bin/pip uninstall -y pip setuptools

# --- runtime: no compiler, no pip, no source tree --------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN groupadd --system --gid "${UID}" remediator \
 && useradd --system --uid "${UID}" --gid remediator --home-dir /var/lib/remediator --shell /usr/sbin/nologin remediator \
 && install -d -o remediator -g remediator -m 0700 /var/lib/remediator
COPY --from=builder /opt/remediator /opt/remediator
# The shipped policies are the default; mount your own directory over /etc/remediator/policies.
COPY policies /etc/remediator/policies
# The listen address is a setting, not an argument: `docker run IMAGE serve --log-level DEBUG` (any CMD) still
# listens on every interface of the container, and `remediator healthcheck` reads the same variables as serve
# (change the port with REMEDIATOR_SERVER__PORT, not serve --port, so that the probe finds it).
ENV PATH=/opt/remediator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REMEDIATOR_SERVER__HOST=0.0.0.0 \
    REMEDIATOR_SERVER__PORT=9095 \
    REMEDIATOR_POLICIES_DIR=/etc/remediator/policies \
    REMEDIATOR_STATE_DIR=/var/lib/remediator \
    REMEDIATOR_LOG__FORMAT=json
WORKDIR /var/lib/remediator
VOLUME ["/var/lib/remediator"]
# Non-root. To reach a mounted /var/run/docker.sock, add the socket's group at run time
# (docker run --group-add "$(stat -c %g /var/run/docker.sock)"); better, talk to a socket proxy over TCP.
USER ${UID}:${UID}
EXPOSE 9095
# Readiness (GET /readyz) where serve listens: the port and TLS of the same settings (remediator/healthcheck.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["remediator", "healthcheck"]
ENTRYPOINT ["remediator"]
CMD ["serve"]
