#!/bin/sh
# Host keys are made on the first start of each container (never baked into the image: every node its
# own), then sshd runs in the foreground as the container's main process.
set -eu
ssh-keygen -A >/dev/null
if [ ! -r /etc/e2e/authorized_keys ]; then
  echo "headnode: /etc/e2e/authorized_keys is missing: mount the engine's public key there" >&2
  exit 1
fi
exec /usr/sbin/sshd -D -e
