"""The desktop on the head node: VNC session, web gateway, VNC passwords, SSH keys and CIDR access rules.

How the pieces fit (for a reader used to Open OnDemand's batch_connect VNC or NICE DCV sessions):

* service.DesktopService (entry point `desktop`) starts templates/desktop/session.sh.j2 detached on the head
  node, in its own process group: Xvnc bound to 127.0.0.1 (VncAuth, geometry/depth from the spec, display
  picked by Xvnc itself), openbox starting an xterm in the job's work folder, and gateway.py. When Xvnc or the
  gateway ends, the whole group ends; the service restarts it while the job is UP (at most 5 times) and stops
  it on terminate. "ready" means the engine itself logged in over RFB (rfb.py) with the session password.
* One web gateway per job, on the head node next to its Xvnc, as OOD runs websockify beside each session:
  the engine proxies nothing, so a busy desktop never loads the engine, and a head node reachable by its users
  needs no route through the engine. It serves Debian's noVNC and proxies its WebSocket to Xvnc; it admits
  only clients inside the job's CIDR rules (others are cut off before any byte, and logged) and only
  WebSockets carrying the session token. Refusals become access.refused events.
* The URL `e2e desktop JOB` prints carries the token and the VNC password after '#', which browsers never
  send: no server log sees them. Job records and events hold the state and the bare URL only; passwords
  and the token live in their own Redis key (secrets.py), deleted on terminate.
* Native viewers: `--vnc-file` writes a .vnc file; `--tunnel` prints ssh/PuTTY forwarding and `--run` opens
  it with paramiko (orchestrator/cluster/tunnel.py). SSH keys (`e2e keys`) go into a managed block of the
  job user's authorized_keys with from="CIDRs", so sshd enforces the same rule (keys_service.py).
* The job panel (panel_app.py): a standalone stdlib + tkinter script shipped into the session as panel.py and
  started as its first app; it shows and controls the job through the REST API with the session's job-scoped
  token (E2E_TOKEN from the environment), so the head node needs no engine.
* CIDR rules (access.py): per job (desktop.access) or per user (`e2e access`), resolved at submit;
  nftables rules for the gateway port are rendered beside the session and loaded where a backend can.

May import: cluster, store, model (and the per-job service contract in model.services).
"""
