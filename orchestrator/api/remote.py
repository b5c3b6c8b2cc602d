"""The typed Python client of the REST API: the same calls and documents as orchestrator.control.client.Client, over
HTTP with a token (the CLI uses it when --server / E2E_SERVER is set)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from orchestrator.api.uploads import path_fields
from orchestrator.control.client import wait_until
from orchestrator.model.errors import InfrastructureError, InvalidState, NotFound, SpecError, UserError
from orchestrator.model.events import Event
from orchestrator.model.spec import spec_for_store
from orchestrator.model.states import JobState, RunState
from solvers.base import Progress

_BY_STATUS = {404: NotFound, 409: InvalidState}


def typed_job(doc: dict[str, Any]) -> dict[str, Any]:
    """A job document from JSON with the engine's types back (states as enums, progress as Progress)."""
    doc = dict(doc)
    doc["state"] = JobState(doc["state"])
    runs = []
    for run in doc.get("runs_detail") or []:
        run = dict(run, state=RunState(run["state"]))
        if run.get("progress"):
            run["progress"] = Progress.model_validate(run["progress"])
        runs.append(run)
    if "runs_detail" in doc:
        doc["runs_detail"] = runs
    if doc.get("run"):
        run = doc["run"]
        doc["run"] = dict(run, state=RunState(run["state"]) if run.get("state") else None,
                          progress=Progress.model_validate(run["progress"]) if run.get("progress") else None)
    return doc


class RemoteClient:
    """One user's connection to an engine's API. Errors come back as the engine's error types."""

    def __init__(self, server: str, token: str, timeout: float = 30.0, transport: Any = None) -> None:
        if not token:
            raise UserError("E2E_TOKEN is not set: an API server needs a token (`e2e admin create-user` makes one)")
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server + "/api/v1", timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {token}"})
        self._me: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    @property
    def user(self) -> str:
        if self._me is None:
            self._me = self._call("GET", "/me")
        return self._me["name"]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfrastructureError(f"cannot reach the API at {self.server}: {exc}") from None
        if response.status_code < 400:
            return response.json() if response.content else None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        message = body.get("error") or f"HTTP {response.status_code}"
        if response.status_code == 422 and body.get("problems"):
            raise SpecError([(p["field"], p["message"]) for p in body["problems"]], "request")
        if response.status_code >= 500:
            raise InfrastructureError(f"the API failed: {message}")
        raise _BY_STATUS.get(response.status_code, UserError)(message)

    # -- submit
    def submit(self, spec: Any, extra: dict[str, Any] | None = None) -> str:
        """Upload the spec's input folders, then submit it with those folders named by their upload."""
        return self._call("POST", "/jobs", json={"spec": self._with_uploads(spec)})["id"]

    def submit_sweep(self, plan: Any) -> tuple[str, list[str]]:
        data = self._with_uploads(plan.members[0].spec)  # the server applies every member's values again
        data["name"] = plan.name
        options = [f"{key}={','.join(json.dumps(v) if not isinstance(v, str) else v for v in values)}"
                   for key, values in plan.axes.items()]
        reply = self._call("POST", "/jobs", json={"spec": data, "sweep": options})
        return reply["sweep"], reply["jobs"]

    def _with_uploads(self, spec: Any) -> dict[str, Any]:
        data = spec_for_store(spec)
        for field, path in path_fields(spec):
            if not Path(path).exists():
                raise SpecError([(field, f"{str(path)!r} does not exist")])
            upload = self._call("POST", "/uploads", content=_tar_gz(Path(path)),
                                headers={"Content-Type": "application/gzip"})
            _set_field(data, field, f"{upload['path']}/{Path(path).name}")
        return data

    # -- read
    def resolve(self, job: str) -> str:
        return self._call("GET", f"/jobs/{job}")["id"]

    def job(self, job: str) -> dict[str, Any]:
        return typed_job(self._call("GET", f"/jobs/{job}"))

    status = job

    def overview(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"owner": owner} if owner else {})}
        return [typed_job(row) for row in self._call("GET", "/jobs", params=params)]

    jobs = overview

    def events(self, job: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        rows = self._call("GET", f"/jobs/{job}/events.json", params={"after": after})
        if not rows and block_ms:
            time.sleep(block_ms / 1000)
        return [Event.model_validate(row) for row in rows]

    def follow(self, job: str, after: str = "0-0", until: Callable[[Event], bool] | None = None,
               timeout: float | None = None) -> Iterator[Event]:
        """Events as they come, over the API's Server-Sent Events stream (resumed after `after`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        headers = {"Accept": "text/event-stream", "Last-Event-ID": after}
        with self.http.stream("GET", f"/jobs/{job}/events", headers=headers,
                              timeout=httpx.Timeout(30.0, read=timeout or 60.0)) as response:
            if response.status_code >= 400:
                response.read()
                self._call("GET", f"/jobs/{job}")  # raises the API's error for this job
            data = ""
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data += line[6:]
                elif line == "" and data:
                    payload, data = json.loads(data), ""
                    if "kind" not in payload:
                        return  # the stream's end
                    event = Event.model_validate(payload)
                    yield event
                    if until is not None and until(event):
                        return
                if deadline is not None and time.monotonic() > deadline:
                    return

    def read_log(self, job: str, run: str | None = None, offset: int = 0) -> tuple[bytes, int]:
        params = {"offset": offset, **({"run": run} if run else {})}
        page = self._call("GET", f"/jobs/{job}/logs", params=params)
        return page["text"].encode(), page["next_offset"]

    def history(self, job: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job}/history")

    # -- control
    def pause(self, job: str, freeze: bool = False) -> dict[str, Any]:
        return typed_job(self._call("POST", f"/jobs/{job}/pause", json={"freeze": freeze}))

    def resume(self, job: str) -> dict[str, Any]:
        return typed_job(self._call("POST", f"/jobs/{job}/resume"))

    def restart(self, job: str) -> dict[str, Any]:
        return typed_job(self._call("POST", f"/jobs/{job}/restart"))

    def rerun(self, job: str) -> dict[str, Any]:
        return typed_job(self._call("POST", f"/jobs/{job}/rerun"))

    def terminate(self, job: str) -> dict[str, Any]:
        return typed_job(self._call("POST", f"/jobs/{job}/terminate"))

    def edit(self, job: str, sets: list[str] | tuple[str, ...] = (), files: dict[str, str] | None = None,
             live: bool = False, message: str = "") -> dict[str, Any]:
        contents = {}
        for local, rel in (files or {}).items():
            try:
                contents[rel] = Path(local).expanduser().read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError([("--file", f"{local!r} is not a readable text file: {exc}")]) from None
        return self._call("POST", f"/jobs/{job}/edit", json={"set": list(sets), "files": contents, "live": live,
                                                               "message": message})

    # -- keys, desktop
    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")

    def add_key(self, text: str) -> dict[str, Any]:
        return self._call("POST", "/keys", json={"key": text})

    def remove_key(self, which: str) -> list[str]:
        return self._call("DELETE", f"/keys/{which}")["removed"]

    def desktop(self, job: str, wait: float = 0) -> dict[str, Any]:
        """The desktop's URL (with its token and password), VNC port and SSH tunnel."""
        return self._call("GET", f"/jobs/{job}/desktop", params={"wait": min(wait, 30)})

    def wait(self, job: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 600,
             poll: float = 0.5) -> dict[str, Any]:
        return wait_until(self.status, job, predicate, timeout, poll)

    def __getattr__(self, name: str) -> Any:
        if name in ("store", "settings", "log_path"):
            raise UserError("this command works on the engine's machine only, not through --server "
                            "(the REST API offers the same through its endpoints)")
        raise AttributeError(name)


def _tar_gz(path: Path) -> bytes:
    """A file or folder as a tar.gz holding it under its own name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def _set_field(data: dict[str, Any], field: str, value: str) -> None:
    *parents, last = field.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value

