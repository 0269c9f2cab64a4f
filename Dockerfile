# idgraph API image: `docker build -t idgraph .` (docker-compose.yml builds it for you).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY identity ./identity
COPY privacy ./privacy
COPY api ./api
COPY services ./services
COPY stream ./stream
# Wheels for idgraph and every dependency, so the runtime stage installs without a compiler
# and without the sources.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[neo4j,kafka]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin idgraph \
    && mkdir -p /var/lib/idgraph \
    && chown idgraph:idgraph /var/lib/idgraph
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'idgraph[neo4j,kafka]' \
    && rm -rf /wheels
WORKDIR /app
COPY policies ./policies
# Non-root: the service needs to write only its data dir (API keys; the graph is in Neo4j).
USER idgraph
ENV IDGRAPH_DATA_DIR=/var/lib/idgraph \
    IDGRAPH_POLICY_DIR=/app/policies
VOLUME ["/var/lib/idgraph"]
EXPOSE 8000
ENTRYPOINT ["idgraph"]
CMD ["serve", "--host", "0.0.0.0"]
