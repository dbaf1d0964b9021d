# The project's server image: `facialattr serve` (embedded Triton 2.51, Python backend, CPU) and the client.
#
#   docker build -t facialattr:latest .                     # on a machine that can pull python:3.11-slim-bookworm
#   docker/build-base.sh && DOCKER_BUILDKIT=1 docker build \
#       --build-arg BASE=facialattr-base:bookworm --build-arg BUILD_BASE=facialattr-base:bookworm-build \
#       --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t facialattr:latest .   # offline base, proxy CA
#
# No "# syntax=" line on purpose: it would pull a frontend image, and BuildKit's built-in one has
# RUN --mount. docs/DEPLOYMENT.md describes the image, its volumes and ports.
ARG BASE=python:3.11-slim-bookworm
ARG BUILD_BASE=${BASE}

FROM ${BUILD_BASE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler (the preload libraries) and strip.
RUN (command -v cc && command -v strip) >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*)
RUN python3 -m venv /opt/facialattr
# Dependencies first, from pyproject.toml alone, so a source change rebuilds only the layers below.
# A CA bundle passed as a BuildKit secret (never a layer) lets pip through a TLS-inspecting proxy.
# Then what the runtime never uses goes: test folders shipped inside wheels, the ONNX protobuf sources and
# the shared libraries' debug symbols (117 MB; dynamic symbols stay). The bytecode is compiled here because
# the runtime cannot write it (read-only root): without it every start compiles every import.
COPY pyproject.toml constraints.txt /src/
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/facialattr/bin/python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > /src/requirements.txt \
    && /opt/facialattr/bin/pip install -q -c /src/constraints.txt -r /src/requirements.txt \
    && find /opt/facialattr -depth -type d -name tests -exec rm -rf {} + \
    && find /opt/facialattr -name '*.proto' -delete \
    && find /opt/facialattr -name '*.so*' -type f -exec strip --strip-unneeded {} + \
    && /opt/facialattr/bin/python -m compileall -q -j 0 /opt/facialattr/lib >/dev/null
COPY README.md /src/
COPY facialattr /src/facialattr
COPY client /src/client
COPY serving /src/serving
COPY export /src/export
COPY training /src/training
COPY benchmarks /src/benchmarks
# The preload and batch-guard libraries (serving/preload.py) are compiled here: the runtime has no compiler.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/facialattr/bin/pip install -q --no-deps --no-compile /src \
    && /opt/facialattr/bin/python -c "from facialattr.serving import batch_guard, preload; print(preload.install_prebuilt_preload(), batch_guard.install_prebuilt_batch_guard())" \
    && /opt/facialattr/bin/python -m compileall -q /opt/facialattr/lib/python3.11/site-packages/facialattr >/dev/null \
    && /opt/facialattr/bin/pip uninstall -q -y pip

FROM ${BASE}
# libpython3.11.so.1.0 must be present: Triton's Python-backend stub links it (the official python
# image ships it; docker/build-base.sh adds Debian's libpython3.11).
RUN python3 -c "import sysconfig, pathlib, sys; lib = pathlib.Path(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME')); sys.exit(0 if lib.exists() else f'{lib} is missing: the Triton Python-backend stub needs it')" \
    && groupadd --system --gid 10001 facialattr \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin facialattr \
    && mkdir -p /models /results && chown 10001:10001 /results && chmod 0700 /results
COPY --from=build /opt/facialattr /opt/facialattr
ENV PATH=/opt/facialattr/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FACIALATTR_MODEL_REPOSITORY=/models
USER 10001:10001
# Results go to a mounted /results (docker-compose.yml's score service); no VOLUME, so no anonymous volumes.
WORKDIR /results
EXPOSE 8001 8002 8003
# /ready of serve's supervisor: 200 only while tritonserver answers, 503 while it restarts.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8003/ready', timeout=2).status != 200)"]
ENTRYPOINT ["facialattr"]
# Inside the container the server must listen on all interfaces for published ports to reach it;
# publish them on the host's 127.0.0.1 only (docker-compose.yml does).
CMD ["serve", "--model-repository", "/models", "--host", "0.0.0.0", "--supervisor-port", "8003"]
