# analytics-gql: one image for the API, the Dramatiq worker and the scheduler (see docker-compose.yml).
# Two stages: the builder turns the checkout into a wheel; the final image holds that wheel's install and its
# runtime dependencies only (no sources, no build tools, no dev extras, nothing editable).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# What the wheel is built from; migrations/ is mapped into it as analytics_gql.migrations (pyproject.toml).
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY analytics_gql ./analytics_gql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir /data && chown 10001:10001 /data
# Installed as root into the system site-packages (read-only to the app user). COPY --from rather than a RUN
# --mount, which the legacy builder (docker-compose 1.x without BuildKit) cannot parse; the wheel is ~0.2 MB.
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/analytics_gql-*.whl && rm -rf /tmp/wheels

USER 10001:10001
# The working folder is the data volume, where the embedded default keeps its SQLite file.
WORKDIR /data
ENV ANALYTICS_DATABASE_URL=sqlite:////data/analytics.db
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# The CLI is the entry: `docker run IMAGE migrate`, `... worker`, `... scheduler`; serving is the default.
# 0.0.0.0 inside the container only: publish the port on the host's loopback (see docker-compose.yml).
ENTRYPOINT ["analytics-gql"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
