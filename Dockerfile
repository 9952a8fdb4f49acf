# analytics-gql: one image for the API, the Dramatiq worker and the scheduler (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir /data && chown app:app /data

COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY analytics_gql ./analytics_gql
# Editable install: storage/schema.py finds alembic.ini and migrations/ beside the package, in /app.
RUN pip install -e . && chown -R root:root /app && chmod -R a+rX /app

USER app
# The embedded default (SQLite, in-process jobs) when run alone; docker-compose.yml sets PostgreSQL and Redis.
ENV ANALYTICS_DATABASE_URL=sqlite:////data/analytics.db
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# 0.0.0.0 inside the container only: publish the port on the host's loopback (see docker-compose.yml).
CMD ["analytics-gql", "serve", "--host", "0.0.0.0", "--port", "8000"]
