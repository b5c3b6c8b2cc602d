"""The desktop on the head node: VNC session, web gateway, VNC passwords, SSH keys and CIDR access rules."""
