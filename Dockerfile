FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The build copies schema.sql into the package: the installed service needs no SCHEMA_PATH.
COPY pyproject.toml setup.cfg setup.py MANIFEST.in README.md LICENSE kernel.py schema.sql ./
COPY service ./service
RUN pip install . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /data \
    && chown app:app /data

ENV HOST=0.0.0.0 \
    PORT=8080 \
    DATABASE_URL=sqlite:////data/calculations.db

USER 10001
# Run from outside /app so the installed package is imported, not the source tree.
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
CMD ["python", "-m", "service"]
