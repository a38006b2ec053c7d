# S3-compatible server for the Docker e2e: moto's server in a virtualenv on the image's base (the local debootstrap
# base here, python:3.11-slim-bookworm elsewhere), independent of the shardscore image so it is built once.
# Build context: a wheelhouse directory holding requirements.txt and the wheels (tests/e2e_docker/run.sh prepares it
# in .tools/wheelhouse-s3 from requirements-dev.lock's moto pin).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
COPY . /tmp/wheels/
RUN python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels \
 && useradd --uid 1000 --create-home moto
USER 1000
EXPOSE 5000
CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
