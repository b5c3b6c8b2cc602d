# The engine image: the API (`e2e serve`), Celery workers and beat all run from it (docker-compose.yml).
# Debian 12 with Python 3.11, like the machines the tests run on.
FROM python:3.11-slim-bookworm

# ssh/rsync: the ssh backend's staging and the file sync; util-linux: setsid for local runs; procps: ps/kill.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openssh-client rsync util-linux procps tini \
 && rm -rf /var/lib/apt/lists/*

# One unprivileged user; uid 1000 matches the `hpc` user of headnode.Dockerfile, so both sides of the
# shared e2e-home volume can write the run directories.
RUN useradd --uid 1000 --create-home e2e && install -d -o e2e -g e2e /var/lib/e2e /etc/e2e

WORKDIR /opt/e2e
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY solvers solvers
COPY templates templates
# Editable: the solver templates are read from the source tree next to the package.
RUN pip install --no-cache-dir -e /opt/e2e

USER e2e
ENV E2E_HOME=/var/lib/e2e E2E_API_HOST=0.0.0.0 PYTHONUNBUFFERED=1
EXPOSE 8765
ENTRYPOINT ["tini", "--"]
CMD ["e2e", "serve", "--host", "0.0.0.0"]
