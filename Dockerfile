# The kubespin image: `kubespin operator`, `kubespin up` (the shim app pods run), `kubespin node-probe`
# and `kubespin llm-serve`, from one wheel. Not built by CI (the CI machine reaches no container registry
# for a base image); build it where Docker Hub (or a mirror of python:3.11-slim-bookworm) is reachable:
#
#   docker build -t ghcr.io/kubespin/kubespin:0.1.0 .                      # with local LLM inference
#   docker build --build-arg WITH_LLM=0 -t ghcr.io/kubespin/kubespin:0.1.0-lean .
#
# llama.cpp is compiled for every x86_64 CPU level and picks the best at run time (GGML_BACKEND_DL +
# GGML_CPU_ALL_VARIANTS): a wheel built with -march=native, as scripts/build-llm does for tests, would
# die with SIGILL on an older node. On aarch64 the same flags build the arm variants. The node probe
# (kubespin node-probe) still checks on each node that a model really loads before labelling it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG WITH_LLM=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kubespin kubespin
COPY shim shim
COPY operator operator
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=4 \
    PIP_NO_CACHE_DIR=1
RUN extras="operator"; if [ "$WITH_LLM" = "1" ]; then extras="operator,llm"; fi \
 && pip wheel --wheel-dir /wheels ".[${extras}]"

FROM ${PYTHON_IMAGE}
ARG WITH_LLM=1
COPY --from=build /wheels /wheels
RUN extras="operator"; if [ "$WITH_LLM" = "1" ]; then extras="operator,llm"; fi \
 && pip install --no-cache-dir --no-index --find-links /wheels "kubespin[${extras}]" \
 && rm -rf /wheels \
 && useradd --uid 65532 --create-home --home-dir /home/kubespin kubespin
# The shim keeps its compile cache and pulled apps under $HOME/.cache; app pods may mount an emptyDir there.
USER 65532
ENV HOME=/home/kubespin PYTHONUNBUFFERED=1
ENTRYPOINT ["kubespin"]
CMD ["--help"]
