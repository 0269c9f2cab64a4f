# idgraph API image: `docker build -t idgraph .` (docker-compose.yml builds it for you).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY identity ./identity
COPY privacy ./privacy
COPY services ./services
COPY bootstrap ./bootstrap
COPY api ./api
COPY cli ./cli
COPY console ./console
COPY stream ./stream
# Wheels for idgraph and every dependency, so the runtime stage installs without a compiler
# and without the sources.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[neo4j,kafka,hsm]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin idgraph \
    && mkdir -p /var/lib/idgraph /var/lib/idgraph-kek \
    && chown idgraph:idgraph /var/lib/idgraph /var/lib/idgraph-kek \
    && chmod 700 /var/lib/idgraph /var/lib/idgraph-kek
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'idgraph[neo4j,kafka,hsm]' \
    && rm -rf /wheels
WORKDIR /app
COPY policies ./policies
# Non-root: the service needs to write only its data dir (API keys; the graph is in Neo4j).
USER idgraph
# Production unless told otherwise: a bare `docker run` must not start with generated keys and
# an all-scope API key on 0.0.0.0. The KEK lives on its own volume (or a mounted secret),
# never with vault-keys.sqlite3 in the data volume: one backup must not hold both (docs/keys.md).
ENV IDGRAPH_ENV=production \
    IDGRAPH_DATA_DIR=/var/lib/idgraph \
    IDGRAPH_KEK_FILE=/var/lib/idgraph-kek/kek.json \
    IDGRAPH_POLICY_DIR=/app/policies
VOLUME ["/var/lib/idgraph", "/var/lib/idgraph-kek"]
EXPOSE 8000
ENTRYPOINT ["idgraph"]
CMD ["serve", "--host", "0.0.0.0"]
