# One image for `logpipe serve`, `logpipe drain` and `logpipe run`:
#   docker build -t logpipe .
#   docker run -e LOGPIPE_REDIS_URL=redis://redis:6379 -p 3000:3000 logpipe            (API)
#   docker run -e LOGPIPE_REDIS_URL=redis://redis:6379 -v logs:/var/lib/logpipe/logs logpipe drain
# Configuration is by LOGPIPE_<SECTION>_<KEY> environment variables (see README).

# Build the wheels in a throwaway stage, so no pip cache or build tools reach the image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY logpipe_cli ./logpipe_cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/logpipe logpipe \
    && mkdir /var/lib/logpipe/logs \
    && chown logpipe:logpipe /var/lib/logpipe/logs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
USER logpipe
WORKDIR /var/lib/logpipe
ENV PYTHONUNBUFFERED=1 \
    LOGPIPE_SERVER_HOST=0.0.0.0 \
    LOGPIPE_SERVER_PORT=3000 \
    LOGPIPE_DRAINER_LOGS_DIR=/var/lib/logpipe/logs
EXPOSE 3000
VOLUME ["/var/lib/logpipe/logs"]
# Ready = serving and Redis answers. A drainer container has no API: compose and
# Kubernetes turn this check off for it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('LOGPIPE_SERVER_PORT', '3000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status != 200)"]
# Exec form: logpipe is PID 1's direct program, so `docker stop`'s SIGTERM reaches it and
# the API finishes in-flight requests, the drainer the pass in hand.
ENTRYPOINT ["logpipe"]
CMD ["serve"]
