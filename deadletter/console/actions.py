"""What operators do: reveal, replay, edit and resend, discard, bulk replay (and its progress)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from core import clock
from core.deadletters import PERSON_STAGES
from deadletter.console.auth import ConsoleUser, current_user, requires
from deadletter.console.blueprint import console_bp
from deadletter.console.context import console
from deadletter.console.filters import FilterForm
from deadletter.console.jobs import BulkReplayJob, start_job_thread
from deadletter.console.views import load_dead_letter, render_detail
from deadletter.replay import ReplayError, discard, replay, resend_edited

MAX_EDIT_BYTES = 1024 * 1024


def _user() -> ConsoleUser:
    user = current_user()
    if user is None:  # requires() already refused; this keeps type checkers honest
        abort(401)
    return user


def _back_to(dl_id: str) -> Any:
    return redirect(url_for("console.dead_letter_detail", dl_id=dl_id), code=303)


@console_bp.post("/deadletters/<dl_id>/reveal")
@requires("operator")
def reveal(dl_id: str) -> Any:
    d = load_dead_letter(dl_id)
    rt = console().runtime
    actor = _user().actor
    rt.deadletters.note(d.id, actor, "reveal")
    rt.audit.record(actor, "deadletter.reveal", d.id)
    return render_detail(rt.deadletters.get(d.id) or d, reveal=True)


@console_bp.post("/deadletters/<dl_id>/replay")
@requires("operator")
def replay_one(dl_id: str) -> Any:
    load_dead_letter(dl_id)
    force = request.form.get("force") == "1"
    try:
        queued = replay(console().runtime, dl_id, _user().actor, force=force)
    except ReplayError as exc:
        flash(f"Not replayed: {exc}", "error")
    else:
        flash(f"Replayed: {queued} is queued again{' (forced)' if force else ''}.", "ok")
    return _back_to(dl_id)


@console_bp.post("/deadletters/<dl_id>/edit")
@requires("operator")
def edit_and_resend(dl_id: str) -> Any:
    d = load_dead_letter(dl_id)
    rt = console().runtime
    text = request.form.get("wire", "")
    new = text.strip().replace("\r\n", "\r").replace("\n", "\r").encode("utf-8")
    old = (rt.deadletters.wire(d.id) or b"").rstrip(b"\r")
    problem = ""
    if not new.startswith(b"MSH"):
        problem = "The message must start with an MSH segment."
    elif len(new) > MAX_EDIT_BYTES:
        problem = f"The message is larger than {MAX_EDIT_BYTES} bytes."
    elif new.rstrip(b"\r") == old:
        problem = "Nothing was changed. Use Replay to send the message as it is."
    if problem:
        return render_detail(d, reveal=True, draft=text, error=problem, status=400)
    try:
        queued = resend_edited(rt, d.id, new, _user().actor)
    except ReplayError as exc:
        return render_detail(d, reveal=True, draft=text, error=f"Not resent: {exc}", status=409)
    flash(f"Edited message queued for sending ({queued}).", "ok")
    return _back_to(dl_id)


@console_bp.post("/deadletters/<dl_id>/discard")
@requires("operator")
def discard_one(dl_id: str) -> Any:
    load_dead_letter(dl_id)
    reason = request.form.get("reason", "").strip()
    if not reason:
        abort(400, "A reason is required to discard a dead letter.")
    try:
        discard(console().runtime, dl_id, _user().actor, reason)
    except ReplayError as exc:
        flash(f"Not discarded: {exc}", "error")
    else:
        flash("Discarded.", "ok")
    return _back_to(dl_id)


def _bulk_candidates(form: FilterForm) -> list[str]:
    rows, _ = console().runtime.deadletters.list(form.to_filter(state="open"), limit=10**9)
    return [d.id for d in rows if d.stage not in PERSON_STAGES]


@console_bp.get("/bulk-replay")
@requires("operator")
def bulk_replay_confirm() -> Any:
    form = FilterForm.from_args(request.args)
    form.state = "open"
    return render_template("console/bulk_confirm.html", form=form, count=len(_bulk_candidates(form)))


@console_bp.post("/bulk-replay")
@requires("operator")
def bulk_replay_start() -> Any:
    form = FilterForm.from_args(request.form)
    form.state = "open"
    if form.errors:
        abort(400, "; ".join(form.errors))
    ids = _bulk_candidates(form)
    expected = request.form.get("expected", "")
    if expected.isdigit() and int(expected) != len(ids):
        flash(f"The selection changed from {expected} to {len(ids)} dead letters; check and "
              "confirm again.", "error")
        return redirect(url_for("console.bulk_replay_confirm") + "?" + form.query(), code=303)
    ctx = console()
    actor = _user().actor
    job_id = ctx.jobs.create(actor, ids, form.describe())
    ctx.audit.record(actor, "deadletter.bulk_replay", job_id, count=len(ids),
                     filters=form.describe())
    if ids:
        start_job_thread(ctx.jobs, ctx.runtime, job_id, actor)
    return redirect(url_for("console.bulk_replay_job", job_id=job_id), code=303)


def _load_job(job_id: str) -> BulkReplayJob:
    job = console().jobs.get(job_id)
    if job is None:
        abort(404, f"no job {job_id}")
    return job


@console_bp.get("/jobs/<job_id>")
@requires("viewer")
def bulk_replay_job(job_id: str) -> Any:
    ctx = console()
    job = _load_job(job_id)
    states = ctx.jobs.dead_letter_states(job_id, ctx.runtime.deadletters)
    in_flight = states.get("replayed", 0)
    recently_done = job.state == "done" and clock.now() - job.finished_at < 600
    refresh = (job.state == "running" and not job.stalled) or (recently_done and in_flight > 0)
    return render_template("console/job.html", job=job, states=states, in_flight=in_flight,
                           refusals=ctx.jobs.refusals(job_id), refresh=refresh)


@console_bp.post("/jobs/<job_id>/resume")
@requires("operator")
def bulk_replay_resume(job_id: str) -> Any:
    ctx = console()
    job = _load_job(job_id)
    if job.state == "running":
        ctx.audit.record(_user().actor, "deadletter.bulk_replay_resume", job_id)
        start_job_thread(ctx.jobs, ctx.runtime, job_id, job.actor)
    return redirect(url_for("console.bulk_replay_job", job_id=job_id), code=303)
