# syntax=docker/dockerfile:1
# Build stage: turn the source tree into a wheel that carries the bundled publication.
# An exact version tag (not a moving 3.11-slim); pin by digest where your registry mirror confirms one.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_pub ./fhir_pub
COPY resources ./resources
COPY profiles ./profiles
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11.11-slim-bookworm
RUN useradd --create-home --uid 10001 fhirpub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fhirpub
WORKDIR /home/fhirpub
# Without --workers, serve starts one worker per CPU available to the container (cgroup quota included).
# Build the bundled publication into the image, so a container starts serving at once.
RUN fhir-pub build --out /home/fhirpub/publication.sqlite
# Bulk export jobs write to FHIR_PUB_JOBS_DIR: with a read-only root filesystem, mount a volume or tmpfs here.
ENV FHIR_PUB_JOBS_DIR=/home/fhirpub/jobs
EXPOSE 8080
# /healthz answers 200 once a worker serves; python, not curl, which the slim image does not have.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["fhir-pub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--publication", "/home/fhirpub/publication.sqlite"]
