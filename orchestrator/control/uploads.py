"""Input uploads: each user's unpacked case folders under E2E_HOME/uploads/<user>/<id>, within a per-upload
cap and a per-user quota; listed and deleted by their owner; and specs submitted through the API may only
name folders inside the caller's uploads (the remote client finds the same fields to upload them first).

Layout (0700, owned by the engine; a run gets a copy of its inputs when it starts, made as the job's account):

    uploads/                          0711 once a root engine hands an upload over (accounts pass, not list)
    uploads/<user>/<id>/...           what the archive held; with a root engine and the user mapped to an OS
                                      account, that account's (dirs 0700, files 0600): only it reads them
    uploads/.index/<user>/<id>.json   size, files, name, created (user names cannot start with '.')
    uploads/.index/<user>/.lock       held while an upload is checked against the quota and unpacked
    uploads/.incoming/                archives being received and folders being unpacked or deleted
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic import BaseModel

from orchestrator.cluster import identity
from orchestrator.cluster.owned import hand_over_tree
from orchestrator.control.unpack import TooLarge, unpack
from orchestrator.model.errors import InvalidState, NotFound, SpecError
from orchestrator.model.identity import Account

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService

UPLOAD_ID = re.compile(r"^up-[0-9a-f]{12}$")
OWNER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def uploads_root(home: Path, user: str) -> Path:
    return home / "uploads" / user


def path_fields(model: Any, prefix: str = "") -> list[tuple[str, Path]]:
    """Every Path value in a validated spec (input folders, case files), with its field name."""
    found: list[tuple[str, Path]] = []
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += path_fields(getattr(model, name), f"{prefix}{name}.")
    elif isinstance(model, Path):
        found.append((prefix.rstrip("."), model))
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            found += path_fields(item, f"{prefix}{index}.")
    elif isinstance(model, dict):
        for key, item in model.items():
            found += path_fields(item, f"{prefix}{key}.")
    return found


def check_inside_uploads(spec: Any, base: Path) -> None:
    """Refuse a spec naming a path outside the user's uploads (another user's files, the server's)."""
    base = base.resolve()
    problems = [(field, "must be a folder you uploaded (POST /uploads), named relative to your uploads")
                for field, path in path_fields(spec)
                if not Path(path).resolve().is_relative_to(base)]
    if problems:
        raise SpecError(problems)


# -- the folders
def private_dir(path: Path) -> Path:
    """`path` (and its missing parents up to an existing one) as a folder only the engine may enter."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    for folder in (path, *missing):
        folder.chmod(0o700)
    return path


def _top(home: Path) -> Path:
    """uploads/: 0700, or 0711 once accounts own uploads below it (they pass through, never list it)."""
    top = home / "uploads"
    top.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(top.lstat().st_mode) & ~0o711:
        top.chmod(0o700)
    return top


def incoming_dir(home: Path) -> Path:
    """Where archives are received and unpacked before they become an upload (same filesystem: a rename)."""
    return private_dir(_top(home) / ".incoming")


def _index(home: Path, user: str) -> Path:
    return private_dir(_top(home) / ".index" / user)


def upload_account(service: ControlService) -> Account | None:
    """The OS account a user's uploads belong to: the API user's mapped account on a root engine; None
    (the engine keeps them) in single-user mode, for the host's own CLI, or a user not mapped yet."""
    if not identity.multi_user() or not service.scoped:
        return None
    try:
        name = service.store.users.get(service.user).os_user
    except NotFound:
        return None  # a user removed meanwhile (or a test's bare service): the engine keeps the upload
    return identity.check_job_account(name, f"os_user of user {service.user!r}") if name else None


def _hand_to(account: Account | None, home: Path, base: Path, staging: Path) -> None:
    """The unpacked tree becomes the account's (a walk that never follows a link), with the user's folder,
    so the account (and the engine copying inputs as it) can read it and nobody else can."""
    if account is None:
        return
    hand_over_tree(staging, account)
    os.chown(base, account.uid, account.gid, follow_symlinks=False)
    (home / "uploads").chmod(0o711)


@contextmanager
def _user_lock(home: Path, user: str) -> Iterator[None]:
    """One upload or deletion of a user's at a time, across API processes: the quota check and the
    unpacking it bounds must not interleave with another's."""
    fd = os.open(_index(home, user) / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _owner(service: ControlService, owner: str | None) -> str:
    """Whose uploads: the caller's own, or (admins only) the named user's."""
    if owner is None or not service.admin:
        return service.user
    if not OWNER.match(owner):
        raise SpecError([("owner", f"{owner!r} is not a user name")], "request")
    return owner


def human(size: int) -> str:
    """A byte count for people: "900 bytes", "3.9 KiB", "1.5 MiB", "2.0 GiB"."""
    if size < 1024:
        return f"{size} bytes"
    exponent = min(3, (size.bit_length() - 1) // 10)
    return f"{size / (1 << 10 * exponent):.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


# -- the index
def _meta(home: Path, user: str, upload_id: str) -> dict[str, Any]:
    """An upload's index entry; rebuilt from its files when missing (uploads made before the index)."""
    entry = _index(home, user) / f"{upload_id}.json"
    try:
        return json.loads(entry.read_text())
    except (OSError, ValueError):
        folder = uploads_root(home, user) / upload_id
        files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
        meta = {"id": upload_id, "bytes": sum(p.stat().st_size for p in files), "files": len(files),
                "name": ", ".join(sorted(p.name for p in folder.iterdir())[:20]),
                "created": folder.stat().st_mtime}
        _write_meta(home, user, meta)
        return meta


def _write_meta(home: Path, user: str, meta: dict[str, Any]) -> None:
    entry = _index(home, user) / f"{meta['id']}.json"
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    tmp.chmod(0o600)
    tmp.replace(entry)


def _upload_ids(home: Path, user: str) -> list[str]:
    base = uploads_root(home, user)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if UPLOAD_ID.match(p.name) and p.is_dir())


def usage(home: Path, user: str) -> int:
    """Unpacked bytes the user's uploads hold together."""
    return sum(int(_meta(home, user, upload_id)["bytes"]) for upload_id in _upload_ids(home, user))


def _jobs_using(service: ControlService, user: str, home: Path) -> dict[str, list[str]]:
    """upload id -> the user's jobs that have not terminated and name a path inside it. Only those jobs
    matter: a run copies its inputs from the upload when it starts, and a rerun starts from them again."""
    store = service.store
    active = store.active_jobs()
    base = str(uploads_root(home, user)) + "/"
    using: dict[str, list[str]] = {}
    for job_id, owner in zip(active, store.owners(active), strict=True):
        if owner != user:
            continue
        try:
            spec = store.get_job(job_id).spec
        except NotFound:
            continue  # terminated meanwhile
        for text in _strings(spec):
            if text.startswith(base):
                upload_id = text[len(base):].split("/", 1)[0]
                if job_id not in using.setdefault(upload_id, []):
                    using[upload_id].append(job_id)
    return using


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


# -- the operations
def add_upload(service: ControlService, archive: Path) -> dict[str, Any]:
    """Unpack a received archive as a new upload of the caller's, within the per-upload cap and what is left
    of the caller's quota: {id, path, files, bytes (unpacked), name, created}. Over either: TooLarge
    (nothing kept)."""
    home, user, settings = service.settings.root, service.user, service.settings
    base = private_dir(uploads_root(home, user))
    account = upload_account(service)
    upload_id = "up-" + secrets.token_hex(6)
    with _user_lock(home, user):
        used, quota, cap = usage(home, user), settings.quota, settings.max_extracted
        if used >= quota:
            raise TooLarge(f"upload quota reached: {user}'s uploads hold {human(used)} of their {human(quota)} "
                           "(E2E_UPLOAD_QUOTA); delete some first (`e2e uploads rm ID`, DELETE /uploads/{id})")
        room = quota - used

        def too_large(seen: int) -> str:
            if cap <= room:
                return (f"the upload unpacks to more than {human(cap)} ({cap} bytes, E2E_UPLOAD_MAX_EXTRACTED); "
                        "nothing was kept")
            return (f"the upload would exceed {user}'s upload quota: their uploads hold {human(used)} of "
                    f"{human(quota)} (E2E_UPLOAD_QUOTA) and this one unpacks to more than the {human(room)} left; "
                    "delete some first (`e2e uploads rm ID`); nothing was kept")

        staging = incoming_dir(home) / f"{upload_id}.tmp"
        done = unpack(archive, staging, min(cap, room), too_large)
        _hand_to(account, home, base, staging)
        staging.rename(base / upload_id)
        meta = {"id": upload_id, "bytes": done.bytes, "files": done.files, "name": ", ".join(done.names),
                "created": time.time()}
        _write_meta(home, user, meta)
    return {**meta, "path": upload_id}


def list_uploads(service: ControlService, owner: str | None = None) -> list[dict[str, Any]]:
    """The caller's uploads (an admin may name another user's), oldest first, each with the jobs not yet
    terminated that use it (`used_by`): {id, path, bytes, files, name, created, used_by}."""
    home, user = service.settings.root, _owner(service, owner)
    ids = _upload_ids(home, user)
    using = _jobs_using(service, user, home) if ids else {}
    rows = [{**_meta(home, user, upload_id), "path": upload_id, "used_by": using.get(upload_id, [])}
            for upload_id in ids]
    return sorted(rows, key=lambda row: row["created"])


def remove_upload(service: ControlService, upload_id: str, owner: str | None = None) -> dict[str, Any]:
    """Delete one of the caller's uploads: {id, bytes (freed)}. Another user's id answers exactly as an id
    that does not exist (NotFound); one that a job not yet terminated names is refused (InvalidState),
    naming those jobs, since the job's next run would copy its inputs from it."""
    home, user = service.settings.root, _owner(service, owner)
    folder = uploads_root(home, user) / upload_id
    if not UPLOAD_ID.match(upload_id or "") or not folder.is_dir():
        raise NotFound(f"no upload {upload_id!r}" + ("" if user == service.user else f" of {user}"))
    with _user_lock(home, user):
        if not folder.is_dir():
            raise NotFound(f"no upload {upload_id!r}")
        users = _jobs_using(service, user, home).get(upload_id)
        if users:
            raise InvalidState(f"upload {upload_id} is used by {len(users)} job(s) not yet terminated: "
                               f"{', '.join(users)}; a run copies its inputs when it starts, so terminate "
                               "them first")
        freed = int(_meta(home, user, upload_id)["bytes"])
        doomed = incoming_dir(home) / f"{upload_id}.deleting-{secrets.token_hex(4)}"
        folder.rename(doomed)  # gone from the user's folder at once, whatever rmtree takes
        (_index(home, user) / f"{upload_id}.json").unlink(missing_ok=True)
    shutil.rmtree(doomed, ignore_errors=True)
    return {"id": upload_id, "bytes": freed}


__all__ = ["TooLarge", "add_upload", "check_inside_uploads", "list_uploads", "path_fields",
           "remove_upload", "uploads_root", "usage"]
