"""What a route asks FastAPI for: the app's state, and an API key of the route's role (checked, and
rate limited per key)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from tailor.app.http.errors import ApiError
from tailor.app.http.state import ServiceState
from tailor.app.ops import ApiKey, Role

__all__ = ["AppState", "Crm", "Support", "require", "service_state"]


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.tailor
    return state


AppState = Annotated[ServiceState, Depends(service_state)]


def require(role: Role) -> Callable[..., Awaitable[ApiKey]]:
    async def check(
        st: AppState,
        authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
        x_api_key: Annotated[str | None, Header(description="The API key (instead of Authorization)")] = None,
    ) -> ApiKey:
        token = x_api_key
        if token is None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = st.ops.verify_key(token)
        if key is None:
            raise ApiError(
                401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
            )
        if key.role != role:
            raise ApiError(403, "forbidden", f"a {key.role} key may not call this endpoint (needs {role})")
        wait = st.buckets.take(key.id)
        if wait > 0:
            st.metrics.inc("tailor_rate_limited_total")
            raise ApiError(
                429,
                "rate_limited",
                "too many requests for this API key",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    return check


Crm = Annotated[ApiKey, Depends(require("crm"))]
Support = Annotated[ApiKey, Depends(require("support"))]
