"""Live routes: a job's events and its solver log, as JSON pages or Server-Sent Events resumable with
Last-Event-ID (an event's stream id; a log's byte offset). A stream counts against its user's cap while open,
and ends within seconds once its token is revoked."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestrator.api.deps import API, TokenWatch, client_for
from orchestrator.control.files import RunLog, read_job_file, run_log
from orchestrator.control.protocol import run_finished
from orchestrator.control.service import ControlService
from orchestrator.model.errors import UserError
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState

router = APIRouter(prefix=API, tags=["live"])
STREAM_ID = r"^\d{1,20}-\d{1,20}$"
KEEPALIVE = 15.0
LOG_POLL = 0.05  # seconds between checks of a followed log: one stat() per client, well inside the 250 ms target
LOG_PAGE = 1 << 20
MAX_OFFSET = (1 << 63) - 1  # the largest file offset seek() takes; beyond it Python raises instead of reading ""
EVENTS_BLOCK = 1.0  # seconds one blocking event read waits: between reads the stream re-checks its token
STATE_CHECK = 5.0  # seconds between looks at a quiet stream's job: a terminated one ends the stream
REVOKED = {"error": "token revoked: this stream is closed"}


class HeldStream(StreamingResponse):
    """A stream that holds one of its user's stream slots until it ends, however it ends (finished, client
    gone, server shutting down): the slot is released and the generator closed here, not left to the GC."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def _held(request: Request, client: ControlService, content: AsyncIterator[bytes]) -> HeldStream:
    """The stream, counted against the caller's cap (429 beyond it; the generator, never started, holds
    nothing)."""
    return HeldStream(content, request.app.state.engine.streams.take(client.user))


def sse(data: Any, event: str | None = None, event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in json.dumps(data, default=str).splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


def _resume_from(after: Optional[str], last_event_id: Optional[str]) -> str:
    value = last_event_id or after or "0-0"
    if not re.match(STREAM_ID, value):
        raise UserError(f"Last-Event-ID/after {value!r} is not an event id (like 1700000000000-0)")
    return value


@router.get("/jobs/{job}/events.json", summary="The job's events after an id, as a JSON list")
def events_page(job: str, client: ControlService = Depends(client_for),
                after: str = Query("0-0", pattern=STREAM_ID), limit: int = Query(1000, ge=1, le=10000)) -> list[dict]:
    return [e.model_dump(mode="json") for e in client.events(job, after, count=limit)]


@router.get("/jobs/{job}/events", summary="The job's events as Server-Sent Events (resumable: Last-Event-ID)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def events_stream(job: str, request: Request, client: ControlService = Depends(client_for),
                        after: Optional[str] = Query(None, pattern=STREAM_ID),
                        last_event_id: Optional[str] = Header(None, max_length=64)) -> StreamingResponse:
    job_id = client.resolve(job)
    start = _resume_from(after, last_event_id)
    url = client.settings.resolved_redis_url()
    return _held(request, client, _follow_events(request, client, job_id, start, url))


async def _follow_events(request: Request, client: ControlService, job_id: str, after: str,
                         url: str) -> AsyncIterator[bytes]:
    """A blocking read on an asyncio connection (the store's async event reader): a new event reaches the
    client as soon as Redis has it. Ends with an `end` event once the job is terminated and every event is sent,
    or with a `revoked` event once the token is revoked (checked between reads)."""
    reader = client.store.async_events(url, socket_timeout=KEEPALIVE + 10)
    watch = TokenWatch(request)
    last_beat, state_checked = time.monotonic(), 0.0  # the first quiet read looks at the job
    try:
        yield b"retry: 2000\n\n"
        while not await request.is_disconnected():
            if not watch.still_valid():
                yield sse(REVOKED, event="revoked")
                return
            events = await reader.read(job_id, after, count=500, block_ms=int(EVENTS_BLOCK * 1000))
            if not events:
                if time.monotonic() - state_checked >= STATE_CHECK:  # a thread hop: not at every short read
                    state_checked = time.monotonic()
                    record = await asyncio.to_thread(client.store.get_job, job_id)
                    if record.state in JOB_TERMINAL:
                        yield sse({"state": "TERMINATED"}, event="end")
                        return
                if time.monotonic() - last_beat >= KEEPALIVE:
                    yield b": keepalive\n\n"
                    last_beat = time.monotonic()
                continue
            last_beat = time.monotonic()
            for event in events:
                after = event.id
                yield sse(event.model_dump(mode="json"), event=event.kind.value, event_id=event.id)
    finally:
        await reader.aclose()


@router.get("/jobs/{job}/logs", summary="The solver log of the current (or a given) run, or of one of its "
                                         "pre-processing steps, from a byte offset")
def log_page(job: str, client: ControlService = Depends(client_for), run: Optional[str] = Query(None, max_length=32),
             offset: int = Query(0, ge=0, le=MAX_OFFSET),
             limit: int = Query(LOG_PAGE, ge=1, le=16 * LOG_PAGE),
             step: Optional[str] = Query(None, max_length=90, description="a step's name, e.g. setFields "
                                                                           "(`steps` of the run's info)")
             ) -> dict[str, Any]:
    text, next_offset = client.read_log(job, run, offset, limit, step)
    return {"run": run or client.job(job).current_run, "offset": offset, "next_offset": next_offset,
            "text": text.decode(errors="replace"), **({"step": step} if step else {})}


@router.get("/jobs/{job}/series", summary="A run's monitored series: every name, and the latest points of the "
                                          "named ones (all when none is named)")
def series(job: str, client: ControlService = Depends(client_for), run: Optional[str] = Query(None, max_length=32),
           name: Optional[list[str]] = Query(None, max_length=50), last: int = Query(500, ge=1, le=10_000)
           ) -> dict[str, Any]:
    return client.series(job, run, [n[:200] for n in name] if name else None, last)


@router.get("/jobs/{job}/logs/stream", summary="The solver log as Server-Sent Events, one per chunk of lines "
                                                "(resumable: Last-Event-ID is the byte offset)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def log_stream(job: str, request: Request, client: ControlService = Depends(client_for),
                     run: Optional[str] = Query(None, max_length=32), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                     last_event_id: Optional[str] = Header(None, max_length=32)) -> StreamingResponse:
    job_id = client.resolve(job)
    if last_event_id is not None:
        if not last_event_id.isdigit() or int(last_event_id) > MAX_OFFSET:
            raise UserError("Last-Event-ID of a log stream is a byte offset")
        offset = int(last_event_id)
    await asyncio.to_thread(_log_state, client, job_id, run)  # an unknown run is a 404 now, not a broken stream
    # Without `run`, the run current now: the stream is that run's log (its offsets are that file's) and ends with
    # it, not jumping to the next run a rerun makes (with the old offset) and never ending.
    run = run or await asyncio.to_thread(lambda: client.job(job_id).current_run)
    return _held(request, client, _follow_log(request, client, job_id, run, offset))


async def _follow_log(request: Request, client: ControlService, job_id: str, run: Optional[str],
                      offset: int) -> AsyncIterator[bytes]:
    """Whole lines as they are written; ends once the run has ended and its log is sent, or the token is
    revoked. Every read opens the log confined (control.files): a log the job swapped for a symlink ends the
    stream with an `error` event."""
    yield b"retry: 2000\n\n"
    watch = TokenWatch(request)
    last_beat = time.monotonic()
    log, ended, checked = None, False, 0.0
    while not await request.is_disconnected():
        if not watch.still_valid():
            yield sse(REVOKED, event="revoked")
            return
        now = time.monotonic()
        if log is None or now - checked > 1.0:  # the run (and its log) can change: re-ask once a second
            log, ended = await asyncio.to_thread(_log_state, client, job_id, run)
            checked = now
        try:
            chunk, size = _read_lines(client.settings.root, log, offset) if log is not None else (b"", 0)
        except UserError as exc:
            yield sse({"error": exc.message}, event="error")
            return
        if chunk:
            offset += len(chunk)
            yield sse({"text": chunk.decode(errors="replace")}, event="log", event_id=str(offset))
            last_beat = now
            continue
        if ended and now - checked < 1.0 and log is not None and size <= offset:
            yield sse({"offset": offset}, event="end")
            return
        if now - last_beat > KEEPALIVE:
            yield b": keepalive\n\n"
            last_beat = now
        await asyncio.sleep(LOG_POLL)


def _log_state(client: ControlService, job_id: str, run: Optional[str]) -> tuple[Optional[RunLog], bool]:
    """The run's log (None before the plugin named one) and whether the run has ended."""
    doc = client.status(job_id)
    log = run_log(client, job_id, run)
    # that run's end (a stream of run-001 ends with it, whatever run is current), or the job's
    mine = next((r for r in doc.runs_detail if r.id == run), None) if run else None
    job_over = doc.state in JOB_TERMINAL or doc.state is JobState.FAILED
    ended = run_finished(doc) if mine is None else mine.state in RUN_ENDED or job_over
    return (log if log.rel else None), ended


def _read_lines(home: Path, log: RunLog, offset: int) -> tuple[bytes, int]:
    """New complete lines after offset (a partial last line waits for its newline), and the log's size
    (0 while it does not exist). Raises UserError when the log is a symlink or not a regular file."""
    try:
        found = read_job_file(home, log.job_id, log.rel or "", offset, LOG_PAGE)
    except OSError:
        return b"", 0
    if found is None:
        return b"", 0
    data, size = found
    if len(data) == LOG_PAGE:
        return data, size
    end = data.rfind(b"\n")
    return (data[:end + 1] if end >= 0 else b""), size
