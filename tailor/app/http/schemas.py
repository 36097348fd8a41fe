"""Request and response bodies, and the path parameters the routes share.

Free text in a request body is bounded (each field's limit is named in its 422) and free of control and
bidirectional formatting characters, refused as in ``tailor.core.models`` (see ``refuse_control``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from tailor.app.jobs import TriggerSpec
from tailor.core.models import MAX_ID_LENGTH, Customer, Event, refuse_control
from tailor.data.audience import Audience

__all__ = [
    "CampaignIn",
    "CustomerIdParam",
    "EmailTriggerIn",
    "EventsIn",
    "EventsOut",
    "FeedbackIn",
    "ItemIdParam",
    "SupportIn",
]

# An id a route refuses could be stored but never reached again (see ``MAX_ID_LENGTH``).
CustomerIdParam = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^/\s]+$")]
ItemIdParam = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Clean = AfterValidator(refuse_control)
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), _Clean]
_Url = Annotated[str, Field(max_length=2000), _Clean]


class EmailTriggerIn(_In):
    customer_id: _Id
    trigger: TriggerSpec
    callback_url: _Url | None = None


class CampaignIn(_In):
    # "Segment" names Segment.com, whose calls ``POST /v1/events`` takes; the old key stays accepted so
    # that a CRM written against it keeps working.
    audience: Audience = Field(
        validation_alias=AliasChoices("audience", "segment"),
        description="Who the campaign goes to. Also accepted under its former name, `segment` (deprecated).",
    )
    trigger: TriggerSpec = TriggerSpec(kind="campaign")
    callback_url: _Url | None = None
    approval: Literal["none", "required"] = Field(
        "none",
        description="`required`: the campaign waits, nothing made or sent, until `POST /v1/jobs/{id}/approve`"
        " (preview it first with `GET /v1/jobs/{id}/preview`).",
    )
    send_time: Literal["now", "best_hour"] = Field(
        "now",
        description="`best_hour`: each email waits for its customer's best local hour (from their own"
        " purchases, opens and clicks, else their country's), never inside their quiet hours; the job"
        " keeps each item scheduled until then. `now`: every email as soon as a worker takes it.",
    )
    # The name the body gave the audience: a refusal names the field as the client wrote it. Not part of the
    # schema, nor of the stored spec.
    named: SkipJsonSchema[Literal["audience", "segment"]] = Field("audience", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _note_the_name(cls, data: object) -> object:
        if isinstance(data, dict) and "segment" in data and "audience" not in data:
            return {**data, "named": "segment"}
        return data


class SupportIn(_In):
    customer_id: _Id
    question: Annotated[str, Field(min_length=1, max_length=4000), _Clean]


class FeedbackIn(_In):
    customer_id: _Id
    signal: Literal["open", "click", "purchase", "unsubscribe", "complaint", "thumbs_up", "thumbs_down"]
    item_id: _Id | None = None
    job_id: Annotated[str, Field(max_length=100), _Clean] | None = None
    note: Annotated[str, Field(max_length=2000), _Clean] | None = None


class EventsIn(_In):
    events: list[Event] = Field(default_factory=list, max_length=10_000)
    customers: list[Customer] = Field(default_factory=list, max_length=10_000)


class EventsOut(BaseModel):
    ingested: dict[str, int] = Field(description="What the store wrote, as the service counts it.")
    events: int = Field(description="Events received, as mapped from the body (`ingested.events`: written).")
    duplicates: int = Field(
        0, description="Events not written again: already stored, or repeated in the body, unchanged."
    )
    customers: int = Field(description="Customer profiles created or updated.")
    accepted: int = Field(description="Segment calls (or native records) that were ingested.")
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Well-formed Segment calls Tailor does not use, by reason: the call type (`page`, "
        "`screen`, `group`, `alias`), `track:<event name>` for an event it does not map, or "
        "`anonymous:<type>` for a call with an anonymousId only. Empty for native bodies.",
    )
