"""schemathesis against the served OpenAPI schema: real uvicorn over the real engine, as a user who owns a
running job, next to another user's job. Every generated request (valid and invalid by the schema, on random,
own and foreign job ids) must answer without a 5xx, and the other user's job exactly as a missing one."""

from __future__ import annotations

import time

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from orchestrator.control.client import Client
from tests.integration.api.conftest import Served, api_os_user

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20  # per operation (both modes): ~30 operations stay near a minute on 2 cores
ADMIN_ONLY = ("/drain", "/undrain", "/audit")  # also fuzzed as an admin, past the 403
STREAM_TIMEOUT = 1.0  # SSE routes never end while the job runs: schemathesis reads them for this long
SLEEPER = {"name": "fuzz-target", "desktop": {"enabled": False},
           "solver": {"name": "command", "command": ["sleep", "600"]}}


@pytest.fixture(scope="module")
def fuzz_target(engine):
    """An API server whose rate limit the fuzzer does not trip, a user owning a running job, and another
    user's job (which must stay invisible)."""
    users = engine.client.store.users
    suffix = str(int(time.time() * 1000) % 10**8)
    me, other = f"fuzz{suffix}", f"owner{suffix}"
    tokens = {"user": users.create(me, os_user=api_os_user()),
              "admin": users.create(f"fuzzadmin{suffix}", admin=True, os_user=api_os_user())}
    users.create(other, os_user=api_os_user())
    mine = Client(engine.settings, user=me).submit_data(SLEEPER)
    theirs = Client(engine.settings, user=other).submit_data(SLEEPER)
    engine.client.wait(mine, lambda doc: doc.state.value == "UP", timeout=60)
    served = Served(engine.settings.model_copy(update={"api_rate": 100_000.0, "api_burst": 1_000_000}))
    yield served, tokens, mine, theirs
    served.stop()
    for job_id in (mine, theirs):
        engine.client.terminate(job_id)
    for job_id in (mine, theirs):
        engine.wait_job_terminal(job_id)


def _strategy(operation, mine: str, theirs: str):
    """Cases of both modes; a {job} path parameter is random, the caller's job or the other user's."""
    fixed = {"query": {"wait": 0}} if operation.path.endswith("/desktop") else {}
    modes = [operation.as_strategy(generation_mode=mode, **fixed)
             for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    cases = st.one_of(*modes)
    if "{job}" not in operation.path:
        return st.tuples(cases, st.none())
    return st.tuples(cases, st.sampled_from([None, mine, theirs]))


def test_no_generated_request_gets_a_server_error(fuzz_target):
    served, tokens, mine, theirs = fuzz_target
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    errors, leaks, statuses = [], [], {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # terminate last: the caller's job stays up for every other route; admins' routes once more as an admin
    runs = sorted([(op, "user") for op in operations], key=lambda run: run[0].path.endswith("/terminate")) \
        + [(op, "admin") for op in operations if op.path.endswith(ADMIN_ONLY)]

    for operation, role in runs:
        auth = {"Authorization": f"Bearer {tokens[role]}"}
        label = f"{operation.method.upper()} {operation.path}" + (" (admin)" if role == "admin" else "")
        streaming = operation.path.endswith(("/events", "/logs/stream"))

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(drawn=_strategy(operation, mine, theirs))
        def exercise(drawn) -> None:
            case, job = drawn
            if job is not None:
                case.path_parameters = {**(case.path_parameters or {}), "job": job}
            try:
                response = case.call(base_url=served.url, headers=auth,
                                     timeout=STREAM_TIMEOUT if streaming else 30)
            except requests.RequestException as exc:  # e.g. a stream the server broke off after its 200
                errors.append(f"{label} -> {type(exc).__name__}: {case.as_curl_command()}\n  {exc}")
                return
            statuses.setdefault(label, []).append(response.status_code)
            if response.status_code >= 500:
                errors.append(f"{label} -> {response.status_code}: {case.as_curl_command()}\n  "
                              f"{response.content[:300]!r}")
            if job == theirs:  # another user's job must answer exactly as a job that does not exist
                case.path_parameters = {**case.path_parameters, "job": "no-such-job"}
                missing = case.call(base_url=served.url, headers=auth, timeout=STREAM_TIMEOUT if streaming else 30)
                if missing.status_code != response.status_code:
                    leaks.append(f"{label}: another user's job -> {response.status_code}, a missing job -> "
                                 f"{missing.status_code}: {case.as_curl_command()}")

        exercise()

    assert not errors, "5xx answers:\n" + "\n".join(errors)
    assert not leaks, "\n".join(leaks)
    # The fuzzer really got through: every operation was called, and the caller's own requests succeed.
    assert len(statuses) >= 25, sorted(statuses)
    assert 200 in statuses["GET /api/v1/me"] and 200 in statuses["GET /api/v1/jobs/{job}"]
