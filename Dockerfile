FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY webhooks webhooks
COPY worker worker
COPY adapters adapters
COPY deadletter deadletter
COPY calehr calehr
RUN pip install --no-cache-dir . && useradd --system --uid 10001 calehr
USER calehr
ENV CALEHR_CONFIG=/config/calehr.toml
