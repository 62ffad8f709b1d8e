"""Read-only console pages: dead-letter list, conflicts, detail, audit log, error pages."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
from flask import abort, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from core.deadletters import PERSON_STAGES, STAGES, STATES, DeadLetter
from core.redact import redact_text
from core.runtime import Runtime
from deadletter.console.auth import requires
from deadletter.console.blueprint import console_bp
from deadletter.console.chart import failure_chart
from deadletter.console.context import console
from deadletter.console.filters import FilterForm
from deadletter.console.masking import mask_wire, show_wire
from deadletter.console.timeline import build_timeline, event_facts
from deadletter.replay import edits

PAGE_SIZE = 50


@console_bp.get("/")
def home() -> Any:
    return redirect(url_for("console.dead_letter_list"))


def _reason_counts(rows: list[DeadLetter]) -> list[tuple[str, str, int]]:
    counts = Counter((d.stage, d.error_code) for d in rows)
    return [(stage, code, n) for (stage, code), n in counts.most_common()]


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _render_list(form: FilterForm, title: str, template_endpoint: str) -> Any:
    ctx = console()
    flt = form.to_filter()
    rows, total = ctx.runtime.deadletters.list(flt, limit=10**9)
    page = _page_number()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(page, pages)
    shown = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    open_replayable = sum(1 for d in rows if d.state == "open" and d.stage not in PERSON_STAGES)
    return render_template(
        "console/list.html", title=title, form=form, rows=shown, total=total, page=page,
        pages=pages, page_size=PAGE_SIZE, reasons=_reason_counts(rows),
        chart=failure_chart([d.created_at for d in rows], flt.since, flt.until),
        states=STATES, stages=STAGES, targets=[t.name for t in ctx.settings.targets],
        error_codes=sorted({d.error_code for d in rows}), open_replayable=open_replayable,
        endpoint=template_endpoint)


@console_bp.get("/deadletters")
@requires("viewer")
def dead_letter_list() -> Any:
    return _render_list(FilterForm.from_args(request.args), "Dead letters",
                        "console.dead_letter_list")


@console_bp.get("/conflicts")
@requires("viewer")
def conflicts() -> Any:
    form = FilterForm.from_args(request.args)
    form.stage = "conflict"
    return _render_list(form, "Conflicts", "console.conflicts")


def load_dead_letter(dl_id: str) -> DeadLetter:
    d = console().runtime.deadletters.get(dl_id)
    if d is None:
        abort(404, f"no dead letter {dl_id}")
    return d


def _response_text(rt: Runtime, d: DeadLetter, reveal: bool) -> str | None:
    """The EHR's last answer (an ACK with ERR, an HTTP body), masked like the message."""
    text = rt.ledger.response(d.delivery_id) if d.delivery_id else None
    if not text:
        return None
    return show_wire(text.encode()) if reveal else mask_wire(text.encode())


def render_detail(d: DeadLetter, *, reveal: bool = False, draft: str | None = None,
                  error: str = "", status: int = 200) -> Any:
    ctx = console()
    rt = ctx.runtime
    delivery = rt.ledger.get_delivery(d.delivery_id) if d.delivery_id else None
    wire = rt.deadletters.wire(d.id) if d.has_wire else None
    target = next((t for t in ctx.settings.targets if t.name == d.target), None)
    editable = (d.state == "open" and bool(d.delivery_id) and wire is not None
                and target is not None and target.kind in ("mllp", "file"))
    facts = event_facts(rt, d.event_id)
    body = render_template(
        "console/detail.html", d=d, delivery=delivery, reveal=reveal, editable=editable,
        error_text=d.error_text if reveal else redact_text(d.error_text),
        wire_text=(show_wire(wire) if reveal else mask_wire(wire)) if wire is not None else None,
        response_text=_response_text(rt, d, reveal),
        draft=draft if draft is not None else (show_wire(wire) if wire and reveal else ""),
        edit_history=edits(rt, d.id) if reveal else [], edit_error=error,
        timeline=build_timeline(d, delivery, facts, reveal=reveal),
        event=facts, target_kind=target.kind if target else "unknown")
    return body, status


@console_bp.get("/deadletters/<dl_id>")
@requires("viewer")
def dead_letter_detail(dl_id: str) -> Any:
    return render_detail(load_dead_letter(dl_id))


@console_bp.get("/audit")
@requires("admin")
def audit_log() -> Any:
    actor = request.args.get("actor", "").strip()[:200]
    record = request.args.get("record", "").strip()[:200]
    page = _page_number()
    size = 100
    found = console().audit.entries(limit=page * size + 1, actor=actor or None,
                                    record=record or None)
    return render_template("console/audit.html", entries=found[(page - 1) * size: page * size],
                           has_next=len(found) > page * size, page=page, actor=actor,
                           record=record)


@console_bp.errorhandler(404)
@console_bp.errorhandler(HTTPException)
def console_error(exc: HTTPException) -> Any:
    """HTML error pages for console requests (the rest of the app answers in JSON)."""
    messages = {400: "The request was refused.", 401: "Please log in.",
                403: "Your role does not allow this.", 404: "Not found.",
                409: "This cannot be done in the record's current state.",
                413: "Too large.", 429: "Too many requests."}
    code = exc.code or 500
    detail = exc.description if code in (400, 404, 409, 413) else ""
    return render_template("console/error.html", code=code,
                           message=messages.get(code, exc.name), detail=detail), code


@console_bp.errorhandler(redis.RedisError)
def store_unavailable(exc: redis.RedisError) -> Any:
    return render_template("console/error.html", code=503, message="The store (Redis) cannot "
                           "be reached. Nothing was changed; try again shortly.",
                           detail=""), 503
