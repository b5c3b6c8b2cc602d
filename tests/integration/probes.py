"""What a hostile job tries, as one shell script per backend: each attempt prints NAME:LEAK when it worked and
NAME:denied when it failed. Controls (attempts that must work, e.g. reading the job's own folder) prove the
probe itself runs and can reach what it aims at; everything else must be denied."""

from __future__ import annotations

import time

from orchestrator.control.client import Client
from tests.conftest import require_root

# bash: each attempt sees the script's own positional parameters ($1, $2, ...), not try's.
HEADER = ('ARGS=("$@")\n'
          'try() { local name=$1 text=$2; set -- "${ARGS[@]}"\n'
          '  if eval "$text" >/dev/null 2>&1; then echo "$name:LEAK"; else echo "$name:denied"; fi; }\n')


def script(attempts: dict[str, str]) -> str:
    """The probe: positional parameters are named by the caller in each attempt's shell text."""
    return HEADER + "".join(f"try {name} {_sq(text)}\n" for name, text in attempts.items())


def outcome(output: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in output.split() if ":" in line)


def check(output: str, controls: set[str], attempts: set[str]) -> None:
    """Every control worked (LEAK), every other attempt was denied, and none is missing."""
    seen = outcome(output)
    assert set(seen) == controls | attempts, output
    assert {k for k in controls if seen[k] != "LEAK"} == set(), f"a control failed: the probe proves nothing\n{output}"
    assert {k for k in attempts if seen[k] != "denied"} == set(), f"the job reached another's or the engine's\n{output}"


def owners(engine, *os_users: str) -> dict[str, Client]:
    """A fresh API user mapped to each OS account, and a plain (non-admin) client of theirs."""
    require_root()
    suffix = str(int(time.time() * 1000) % 10**8)
    made = {}
    for os_user in os_users:
        name = f"{os_user}{suffix}"
        engine.client.store.users.create(name, os_user=os_user)
        made[os_user] = Client(engine.settings, user=name, admin=False)
    return made


def _sq(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
