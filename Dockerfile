FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY triggers ./triggers
COPY agents ./agents
COPY examples ./examples
RUN pip install --no-cache-dir . && useradd --create-home nightowl
USER nightowl
ENV PYTHONPATH=/app
CMD ["nightowl", "--help"]
