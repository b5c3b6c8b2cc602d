"""Usage errors of the real `e2e` console script: one line naming the problem, a usage hint, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

E2E = Path(sys.executable).with_name("e2e")
BOX = set("╭╮╰╯│─┃━┏┓┗┛")


def e2e(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    # No engine is reachable: a usage error must be reported before anything connects.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "COLUMNS": "80"}
    env.pop("E2E_SERVER", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", *args] if module or not E2E.exists() else [str(E2E), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def usage_error(*args: str, module: bool = False) -> tuple[str, str]:
    """Run a bad command line; check the common shape; return the message line and the hint line."""
    proc = e2e(*args, module=module)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr and not BOX & set(proc.stderr), proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    message, hint = lines
    assert message.startswith("e2e")
    assert hint.startswith("Usage: e2e") and "--help" in hint
    return message, hint


def test_an_unknown_command_is_named_with_the_close_ones():
    message, hint = usage_error("stauts")
    assert message.startswith("e2e: no such command 'stauts'")
    assert "did you mean 'status'" in message
    assert "try 'e2e --help'" in hint


def test_an_unknown_command_of_a_group_names_the_group():
    message, hint = usage_error("sweep", "stat")
    assert message == "e2e sweep: no such command 'stat' (did you mean 'status'?)"
    assert "'e2e sweep --help'" in hint


def test_an_unknown_command_far_from_every_name_suggests_nothing():
    message, _ = usage_error("zzzzqqq")
    assert message == "e2e: no such command 'zzzzqqq'"


def test_an_unknown_option():
    message, hint = usage_error("ls", "--bogus")
    assert message == "e2e ls: no such option '--bogus'"
    assert hint.startswith("Usage: e2e ls [OPTIONS]") and "'e2e ls --help'" in hint


def test_a_misspelled_option_suggests_the_real_one():
    message, _ = usage_error("ls", "--limt", "3")
    assert message == "e2e ls: no such option '--limt' (did you mean '--limit'?)"


def test_a_global_option_after_the_command_says_where_it_goes():
    message, _ = usage_error("ls", "--server", "http://x")
    assert "no such option '--server'" in message and "goes before the command" in message


def test_an_option_missing_its_value():
    message, hint = usage_error("terminate", "--sweep")
    assert message == "e2e terminate: option '--sweep' requires an argument"
    assert hint.startswith("Usage: e2e terminate")


def test_a_global_option_missing_its_value():
    message, _ = usage_error("--server")
    assert message == "e2e: option '--server' requires an argument"


def test_a_value_of_the_wrong_type():
    message, _ = usage_error("ls", "--limit", "abc")
    assert message.startswith("e2e ls: invalid value for '--limit'")
    assert "integer" in message


def test_a_missing_argument():
    message, hint = usage_error("status")
    assert message == "e2e status: missing argument 'job'"
    assert hint.startswith("Usage: e2e status")


def test_an_extra_argument():
    message, _ = usage_error("ls", "extra")
    assert message.startswith("e2e ls: got unexpected extra argument")


def test_python_dash_m_reports_the_same_way():
    message, _ = usage_error("stauts", module=True)
    assert message.startswith("e2e: no such command 'stauts'")


@pytest.mark.parametrize("args", [(), ("sweep",)])
def test_a_group_alone_prints_its_help_and_exits_2(args):
    proc = e2e(*args)
    assert proc.returncode == 2
    assert "Usage: e2e" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_help_still_exits_0():
    proc = e2e("--help")
    assert proc.returncode == 0 and "Usage: e2e" in proc.stdout
