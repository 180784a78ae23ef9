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
# Build the bundled publication into the image, so a container starts serving at once.
RUN fhir-pub build --out /home/fhirpub/publication.sqlite
EXPOSE 8080
ENTRYPOINT ["fhir-pub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--publication", "/home/fhirpub/publication.sqlite"]
