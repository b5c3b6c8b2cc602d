"""RemoteControl: the `Control` protocol over the REST API with a token (the CLI uses it when --server /
E2E_SERVER is set): the same calls and typed documents as the engine-side ControlService."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import quote

import httpx

from orchestrator.control.protocol import History, JobStatus, JobSummary, wait_until
from orchestrator.control.uploads import path_fields
from orchestrator.model.errors import InfrastructureError, InvalidState, NotFound, SpecError, UserError
from orchestrator.model.events import Event
from orchestrator.model.records import Job
from orchestrator.model.spec import spec_for_store

_BY_STATUS = {404: NotFound, 409: InvalidState}
# What only the engine's own machine can do (its files, its inventory, a desktop's secrets on disk).
LOCAL_ONLY = frozenset({"store", "settings", "log_path", "render", "host_key", "trust_host_key", "file_store",
                        "desktop_session", "check_desktop_access", "set_desktop_password", "open_desktop_tunnel",
                        "head_is_local"})


def local_only() -> UserError:
    return UserError("this command works on the engine's machine only, not through --server "
                     "(the REST API offers the same through its endpoints)")


class RemoteControl:
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

    def status(self, job: str) -> JobStatus:
        return JobStatus.model_validate(self._call("GET", f"/jobs/{job}"))

    job = status

    def overview(self, limit: int = 100, owner: str | None = None) -> list[JobSummary]:
        params = {"limit": limit, **({"owner": owner} if owner else {})}
        return [JobSummary.model_validate(row) for row in self._call("GET", "/jobs", params=params)]

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

    def read_log(self, job: str, run: str | None = None, offset: int = 0,
                 step: str | None = None) -> tuple[bytes, int]:
        params = {"offset": offset, **({"run": run} if run else {}), **({"step": step} if step else {})}
        page = self._call("GET", f"/jobs/{job}/logs", params=params)
        return page["text"].encode(), page["next_offset"]

    def series(self, job: str, run_id: str | None = None, names: list[str] | None = None,
               last: int = 500) -> dict[str, Any]:
        params: dict[str, Any] = {"last": last, **({"run": run_id} if run_id else {})}
        if names:
            params["name"] = names
        return self._call("GET", f"/jobs/{job}/series", params=params)

    def history(self, job: str) -> History:
        return History.model_validate(self._call("GET", f"/jobs/{job}/history"))

    # -- control
    def pause(self, job: str, freeze: bool = False) -> JobStatus:
        return JobStatus.model_validate(self._call("POST", f"/jobs/{job}/pause", json={"freeze": freeze}))

    def resume(self, job: str) -> JobStatus:
        return JobStatus.model_validate(self._call("POST", f"/jobs/{job}/resume"))

    def restart(self, job: str) -> JobStatus:
        return JobStatus.model_validate(self._call("POST", f"/jobs/{job}/restart"))

    def rerun(self, job: str) -> JobStatus:
        return JobStatus.model_validate(self._call("POST", f"/jobs/{job}/rerun"))

    def terminate(self, job: str) -> Job:
        return Job.model_validate(self._call("POST", f"/jobs/{job}/terminate"))

    def terminate_sweep(self, sweep: str) -> tuple[str, list[Job]]:
        raise local_only()

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

    # -- sweeps (no endpoints yet)
    def sweeps(self, limit: int = 50) -> list[dict[str, Any]]:
        raise local_only()

    def sweep_status(self, sweep: str) -> tuple[str, list[dict[str, Any]]]:
        raise local_only()

    # -- nodes
    def nodes(self, backend: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/nodes", params={"backend": backend} if backend else {})

    def drain(self, node: str, reason: str = "", backend: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node}/drain", json={"reason": reason},
                          params={"backend": backend} if backend else {})

    def undrain(self, node: str, force: bool = False, backend: str | None = None) -> tuple[int, str | None]:
        params: dict[str, Any] = {"force": force, **({"backend": backend} if backend else {})}
        reply = self._call("POST", f"/nodes/{node}/undrain", params=params)
        return reply["killed"], reply["warning"]

    # -- files
    def files(self, job: str) -> dict[str, Any]:
        listing = self._call("GET", f"/jobs/{job}/files")
        return {"location": f"{self.server}/api/v1/jobs/{listing['job']}/files", **listing}

    def download(self, job: str, path: str | None, to: Path) -> tuple[str, list[str]]:
        raise local_only()

    def put_work_file(self, job: str, path: str, source: BinaryIO) -> dict[str, Any]:
        return self._call("PUT", f"/jobs/{job}/files/{quote(path, safe='/')}", content=source)

    # -- input uploads
    def uploads(self, owner: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/uploads", params={"owner": owner} if owner else {})

    def remove_upload(self, upload_id: str, owner: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", f"/uploads/{quote(upload_id, safe='')}", params={"owner": owner} if owner else {})

    # -- keys, access rules, desktop, usage
    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")

    def add_key(self, text: str) -> dict[str, Any]:
        return self._call("POST", "/keys", json={"key": text})

    def remove_key(self, which: str) -> list[str]:
        return self._call("DELETE", f"/keys/{which}")["removed"]

    def access_rules(self) -> dict[str, Any]:
        rules = self._call("GET", "/access")["rules"]
        return {"rules": rules, "shown": rules or ["everywhere"], "default": rules is None, "my_ip": None}

    def set_access_rules(self, rules: list[str] | None) -> list[str] | None:
        return self._call("PUT", "/access", json={"rules": rules})["rules"]

    # -- notifications
    def notify_targets(self, everyone: bool = False) -> list[dict[str, Any]]:
        return self._call("GET", "/notify/targets", params={"all": "true"} if everyone else None)

    def notify_add(self, kind: str, address: str, events: list[str] | None = None) -> dict[str, Any]:
        return self._call("POST", "/notify/targets", json={"kind": kind, "address": address, "events": events})

    def notify_remove(self, target_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/notify/targets/{quote(target_id, safe='')}")

    def notify_secret(self, rotate: bool = False) -> str:
        return self._call("POST" if rotate else "GET", "/notify/secret")["secret"]

    def notify_test(self) -> list[dict[str, Any]]:
        return self._call("POST", "/notify/test")

    def notify_log(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if job:
            params["job"] = job
        return self._call("GET", "/notify/log", params=params)

    def desktop(self, job: str, wait: float = 0) -> dict[str, Any]:
        """The desktop's URL (with its token and password), VNC port and SSH tunnel."""
        return self._call("GET", f"/jobs/{job}/desktop", params={"wait": min(wait, 30)})

    def desktop_link(self, job: str, address: str | None = None) -> dict[str, Any]:
        """A one-time link to the desktop through the API; `url` is absolute (this server's)."""
        link = self._call("POST", f"/jobs/{job}/desktop/link")
        return {**link, "url": self.server + link["path"]}

    def desktop_share(self, job: str, expires_in: int = 3600, address: str | None = None) -> dict[str, Any]:
        """A view-only link to the desktop for another person; `url` is absolute (this server's)."""
        link = self._call("POST", f"/jobs/{job}/desktop/share", json={"expires_in": expires_in})
        return {**link, "url": self.server + link["path"]}

    def job_token(self, job: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job}/token")

    def usage(self, owner: str | None = None, limit: int = 1000, since: float | None = None,
              until: float | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("owner", owner), ("limit", limit), ("since", since), ("until", until))
                  if v is not None}
        return self._call("GET", "/usage", params=params)

    def wait(self, job: str, predicate: Callable[[JobStatus], bool], timeout: float = 600,
             poll: float = 0.5) -> JobStatus:
        return wait_until(self.status, job, predicate, timeout, poll)

    def __getattr__(self, name: str) -> Any:
        if name in LOCAL_ONLY:
            raise local_only()
        raise AttributeError(name)


RemoteClient = RemoteControl


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

