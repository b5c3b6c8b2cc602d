"""Shared test helpers: components that are missing skip locally and fail in CI (CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a real component a test needs is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {what}")
    pytest.skip(f"missing: {what}")


# -- OS accounts. A root test session runs like a root engine: every job runs as a non-root account, so the
# suites prove that jobs work without root. Created once per machine if missing (no home, locked password).
JOB_ACCOUNT = "e2e-jobs"                       # E2E_RUN_AS of the whole suite: the engine host's CLI jobs
TEST_ACCOUNTS = (JOB_ACCOUNT, "alice", "bob")  # alice and bob: the cross-user tests


def require_root() -> None:
    """Identity tests need a root engine (they switch accounts); skipped otherwise, failed under CI=true."""
    require(os.geteuid() == 0, "root (the identity tests run jobs as other OS accounts)")


def _ensure_accounts() -> None:
    import pwd
    import subprocess

    for name in TEST_ACCOUNTS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            made = subprocess.run(["useradd", "-M", "-s", "/bin/bash", "-U", "--", name], capture_output=True)
            if made.returncode != 0:
                pwd.getpwnam(name)  # made meanwhile by the other session of `make test` (unit beside integration)


def grant_traverse(paths) -> list[str]:
    """o+x (pass through, not list) on every ancestor of the paths the job accounts must reach: the Python
    that runs the sync process and the checkout it imports (the engine code), and pytest's temp folders
    (E2E_HOME lives there; pytest makes them 0700). An installed engine needs none of this: it is
    world-readable. Only directories that lack it are changed, and each one is named."""
    import stat
    from pathlib import Path

    changed = []
    for path in paths:
        for folder in [Path(path), *Path(path).parents]:
            try:
                mode = folder.stat().st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                changed.append(str(folder))
    return changed


def _interruptible_children() -> None:
    """`make test` runs some pytest sessions in the background (`cmd &`), where a non-interactive shell starts
    them with SIGINT ignored, and an ignored signal stays ignored across exec: every CLI a test starts would
    then ignore the Ctrl-C the test sends it (Python keeps SIGINT ignored when it starts ignored). A handler
    here (Python's own) is reset to the default at exec, so the children get their KeyboardInterrupt back."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_interruptible_children()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    """As root, the session's temp folders live in one folder of this checkout's own, not in the machine's
    shared /tmp/pytest-of-root: every root pytest session makes that one 0700 again when it starts, which
    would cut the job accounts of a session already running off from their E2E_HOME."""
    if os.geteuid() != 0 or config.option.basetemp:
        return
    import hashlib
    import shutil
    import tempfile
    from pathlib import Path

    checkout = hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:10]
    # One new folder per session (a job process of the previous session may still be writing into its own),
    # and only the newest kept: `make test` runs three sessions at once (unit and two integration halves), so
    # a session starting must leave the other two (and the previous run's, for a look after a failure).
    earlier = sorted(Path(tempfile.gettempdir()).glob(f"e2e-tests-{checkout}-*"), key=os.path.getmtime)
    for old in earlier[:-5]:
        shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = tempfile.mkdtemp(prefix=f"e2e-tests-{checkout}-")


def pytest_sessionstart(session) -> None:
    """As root: the accounts exist, the suite's jobs run as e2e-jobs (E2E_RUN_AS), and that account can reach
    the interpreter, the code and the temp folders (checked by importing the sync process as it)."""
    if os.geteuid() != 0:
        return
    import subprocess
    import sys
    from pathlib import Path

    _ensure_accounts()
    os.environ["E2E_RUN_AS"] = JOB_ACCOUNT
    repo = Path(__file__).resolve().parents[1]
    basetemp = session.config._tmp_path_factory.getbasetemp()
    changed = grant_traverse([Path(sys.executable).resolve().parent, Path(sys.prefix), repo, basetemp])
    if changed:
        sys.stderr.write(f"identity: granted o+x (traverse only) to {', '.join(changed)} so that job accounts "
                         "reach the interpreter, the engine code and the test folders\n")
    probe = subprocess.run(["setpriv", "--reuid", JOB_ACCOUNT, "--regid", JOB_ACCOUNT, "--init-groups", "--",
                            sys.executable, "-c", "import orchestrator.sync.daemon"],
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        message = f"account {JOB_ACCOUNT} cannot run the engine's Python: {probe.stderr.strip()[-400:]}"
        if IN_CI:
            raise pytest.UsageError(message)
        sys.stderr.write(f"identity: {message}\n")


@pytest.fixture(autouse=True)
def _job_accounts_pass_through_tmp_path(request) -> None:
    """As root, a test's tmp_path (pytest makes it 0700) lets the job accounts pass: tests put E2E_HOME there."""
    if os.geteuid() == 0 and "tmp_path" in request.fixturenames:
        grant_traverse([request.getfixturevalue("tmp_path")])


def job_writable(folder: Path | str) -> Path:
    """A test folder the suite's jobs (another OS account under a root session) may write into: solvers that
    record their starts for a test write there. Sticky and world-writable, like /tmp."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    return path


SESSION_UMASK = os.umask(0o022)
os.umask(SESSION_UMASK)


@pytest.fixture(autouse=True)
def _keep_the_umask():
    """Each test runs with the umask the session started with: code under test that sets the engine's umask 077
    in this process (`e2e serve`, the API app, the Celery app's init hooks; a session fixture may start one)
    would otherwise make every file a later test writes for a job account unreadable to it."""
    os.umask(SESSION_UMASK)
    yield
    os.umask(SESSION_UMASK)
