# syntax=docker/dockerfile:1
# Build stage: turn the source tree into a wheel that carries the bundled publication.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_pub ./fhir_pub
COPY resources ./resources
COPY profiles ./profiles
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 fhirpub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fhirpub
WORKDIR /home/fhirpub
ENTRYPOINT ["fhir-pub"]
# Until `fhir-pub serve` exists (the REST endpoint issue), the image reports the publication it carries.
CMD ["info"]
