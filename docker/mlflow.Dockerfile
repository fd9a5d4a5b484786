# MLflow tracking server: MLflow 3.17.2 with the PostgreSQL driver (backend store) and boto3
# (S3 / MinIO artifact store), run as a non-root user. Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t stcnn-mlflow .
# docker/compose.yaml runs it against PostgreSQL and MinIO (docker/README.md). The command is
# given at run time, e.g.
#   mlflow server --backend-store-uri postgresql://USER:PASSWORD@db:5432/mlflow \
#       --artifacts-destination s3://mlflow/ --host 0.0.0.0 --port 5000
FROM python:3.12.12-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# psycopg2-binary and boto3 ship manylinux wheels: no compiler or libpq needed.
RUN pip install --no-cache-dir \
        mlflow==3.17.2 \
        psycopg2-binary==2.9.13 \
        boto3==1.44.8

RUN groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin mlflow

USER 10001:10001
WORKDIR /home/mlflow

EXPOSE 5000

# MLflow answers GET /health without authentication or a Host check; slim images have no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", \
         "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]

# Without arguments: a server on a local sqlite store inside the container, reachable from
# other containers (publish it on the host's loopback: -p 127.0.0.1:5000:5000).
CMD ["mlflow", "server", "--backend-store-uri", "sqlite:////home/mlflow/mlflow.db", \
     "--artifacts-destination", "/home/mlflow/mlartifacts", \
     "--host", "0.0.0.0", "--port", "5000"]
