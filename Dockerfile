# Image of the Generation Jobs API (FastAPI app and its worker in one process).
#
#   docker compose up --build            # the usual way: see docker-compose.yml
#   docker build -t generation-jobs-api .
#   docker run --rm -p 127.0.0.1:8000:8000 -e DATABASE_URL=postgresql://... generation-jobs-api
#
# Without DATABASE_URL the app starts its own embedded PostgreSQL under /data.
# Migrations are applied by the app at start-up.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data

# A fixed uid/gid so files in the /data volume keep one owner across rebuilds.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
    && mkdir -p /app /data \
    && chown app:app /data

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY alembic.ini ./
COPY backend/ ./backend/

# Numeric, so a runtime (e.g. Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001

EXPOSE 8000

# /readyz answers 503 until the database is reachable, the schema is at head and
# the worker runs; urlopen raises on 503, so the check fails. No curl in slim.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["python", "-m", "backend"]
