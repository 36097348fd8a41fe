"""For the support console (a ``support`` key): a customer's recommendations, why one was made, and
suggestions for answering the customer's question."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from tailor.app.http.actions import support_audit
from tailor.app.http.dependencies import AppState, Support
from tailor.app.http.schemas import CustomerIdParam, ItemIdParam, SupportIn
from tailor.core.models import JsonObject

__all__ = ["router"]

router = APIRouter(tags=["support"])


@router.get("/v1/customers/{customer_id}/recommendations")
async def recommendations(
    st: AppState, key: Support, customer_id: CustomerIdParam, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> JsonObject:
    recs = await run_in_threadpool(st.facade.recommend, customer_id, k)
    st.ops.audit("recommendations", key_id=key.id, customer_id=customer_id, detail={"k": k})
    return {"customer_id": customer_id, "recommendations": [r.model_dump(mode="json") for r in recs]}


@router.get("/v1/customers/{customer_id}/recommendations/{item_id}/why")
async def why(st: AppState, key: Support, customer_id: CustomerIdParam, item_id: ItemIdParam) -> JsonObject:
    explanation = await run_in_threadpool(st.facade.why, customer_id, item_id)
    st.ops.audit("why", key_id=key.id, customer_id=customer_id, detail={"item_id": item_id})
    return {**explanation.model_dump(mode="json"), "text": explanation.text}


@router.post("/v1/support/suggestions")
async def suggestions(st: AppState, key: Support, body: SupportIn) -> JsonObject:
    answer = await run_in_threadpool(st.facade.support, body.customer_id, body.question)
    st.ops.audit("support", key_id=key.id, customer_id=body.customer_id, detail=support_audit(answer))
    return answer.model_dump(mode="json")
