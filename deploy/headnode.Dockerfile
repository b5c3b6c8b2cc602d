# A compute node that can be a job's head node: sshd for the engine (ssh backend) and for users' tunnels,
# and the desktop stack the engine starts per job (TigerVNC, openbox, xterm, noVNC over websockify).
FROM debian:12-slim

ARG WITH_OPENFOAM=false
# --no-install-recommends: openssh-server would pull in systemd, and the desktop is a third of the size.
# xfonts-base: the fonts xterm needs (only a Recommends of TigerVNC). python3: the per-job web gateway.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openssh-server rsync procps util-linux python3 \
      tigervnc-standalone-server tigervnc-tools xfonts-base openbox xterm novnc websockify nftables \
 && if [ "$WITH_OPENFOAM" = "true" ]; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openfoam openmpi-bin; \
    fi \
 && rm -rf /var/lib/apt/lists/*

# The engine logs in as hpc (deploy/inventory.yaml) with the key mounted at /etc/e2e/authorized_keys.
RUN useradd --uid 1000 --create-home --shell /bin/bash hpc \
 && install -d -o hpc -g hpc /var/lib/e2e /var/tmp/e2e \
 && mkdir -p /run/sshd \
 && printf '%s\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'PermitRootLogin no' \
      'AuthorizedKeysFile .ssh/authorized_keys /etc/e2e/authorized_keys' 'AllowTcpForwarding local' \
      > /etc/ssh/sshd_config.d/e2e.conf

COPY deploy/headnode-entrypoint.sh /usr/local/bin/headnode-entrypoint
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/headnode-entrypoint"]
