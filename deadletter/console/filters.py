"""The list filters as a form: parse query arguments, build a DeadLetterFilter, link back."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict

from core.deadletters import STAGES, STATES, DeadLetterFilter, parse_utc

FIELDS = ("state", "target", "stage", "error_code", "appointment_key", "since", "until")


@dataclass
class FilterForm:
    state: str = "open"
    target: str = ""
    stage: str = ""
    error_code: str = ""
    appointment_key: str = ""
    since: str = ""  # datetime-local text, UTC
    until: str = ""
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: MultiDict[str, str]) -> FilterForm:
        form = cls(**{name: args.get(name, getattr(cls, name)).strip()[:200] for name in FIELDS})
        if form.state and form.state not in STATES:
            form.errors.append(f"unknown state {form.state!r}")
            form.state = ""
        if form.stage and form.stage not in STAGES:
            form.errors.append(f"unknown stage {form.stage!r}")
            form.stage = ""
        for name in ("since", "until"):
            if getattr(form, name) and parse_utc(getattr(form, name)) is None:
                form.errors.append(f"{name}: not a date and time (YYYY-MM-DD HH:MM, UTC)")
                setattr(form, name, "")
        return form

    def to_filter(self, **overrides: str | None) -> DeadLetterFilter:
        values = {name: getattr(self, name) or None for name in FIELDS}
        values.update(overrides)
        return DeadLetterFilter(
            state=values["state"], target=values["target"], stage=values["stage"],
            error_code=values["error_code"], appointment_key=values["appointment_key"],
            since=parse_utc(values["since"] or ""), until=parse_utc(values["until"] or ""))

    def query(self, **changes: str | int) -> str:
        """The query string for these filters, with some values changed (e.g. page)."""
        values: dict[str, str | int] = {name: getattr(self, name) for name in FIELDS}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v != "" or k == "state"})

    def describe(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name)}
