"""The CRM sandbox's state (store, limits, faults, counters) and what every route module shares: Zoho's error
shape, the module check, the JSON body, field projection."""

from __future__ import annotations

import collections
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from include.sandbox.crm import meta
from include.sandbox.crm.records import RecordWriter
from include.sandbox.crm.store import USER, USERS, Store

ORG_ID = "60012345678"
# The org's zgid differs from its id in Zoho (GET /crm/v8/org answers both); the bulk-write upload wants the zgid
# in X-CRM-ORG (zoho/crm-oas v8.0/bulk_write.json, SDK sample bulk_write/upload_file.py: "zgid of your
# organization"). Two values here, so a client that sends the id fails against the sandbox as against Zoho.
ZGID = "700098765"
MAX_WRITE = 100
MAX_FIELDS = 50
DISCRETE_LIMIT = 2000
TOKEN_LIMIT = 100_000
FULL_SCOPE = ("ZohoCRM.modules.ALL,ZohoCRM.settings.ALL,ZohoCRM.users.READ,ZohoCRM.org.READ,ZohoCRM.coql.READ,"
              "ZohoCRM.bulk.ALL,ZohoCRM.notifications.ALL,ZohoFiles.files.ALL")


# Zoho's API-limits page, "Concurrency limit": calls in flight per org by edition (the server's side of it)
EDITION_CONCURRENCY = {"free": 5, "standard": 10, "professional": 15, "enterprise": 20, "ultimate": 25}


@dataclass
class Config:
    """Runtime settings: limits like Zoho's and fault injection, changeable through PUT /__sandbox/config."""
    edition: str = "standard"            # GET /crm/v8/org license_details.paid_type; sets concurrency_limit
    concurrency_limit: int = 10          # concurrent API requests per org (Zoho Standard edition)
    sub_concurrency_limit: int = 10      # of those, "complex" calls at once (COQL, bulk): 10 in every edition
    credits_per_day: int = 200_000       # API credits per rolling 24 h
    token_ttl_seconds: int = 3600
    token_mints_per_10min: int = 10      # access tokens one refresh token may mint per 10 minutes
    latency_ms: int = 0                  # added to every API request
    error_rate: float = 0.0              # share of API requests answered 500 before processing
    drop_rate: float = 0.0               # share of API requests processed, then the connection dropped
    burst_429: int = 0                   # the next N API requests get 429
    fault_methods: list[str] = field(default_factory=lambda: ["GET", "POST", "PUT", "DELETE"])
    fault_seed: int | None = None
    subforms_in_lists: bool = False      # list calls (GET /{module}) leave subforms out unless true
    page_token_limit: int = TOKEN_LIMIT  # records one page_token walk may fetch (Zoho: 100,000); lower in tests


class SandboxState:
    def __init__(self, data_dir: str):
        self.store = Store(data_dir)
        self.writer = RecordWriter(self.store)
        self.config = Config(**json.loads(self.store.kv_get("config", "{}")))
        self.rng = random.Random(self.config.fault_seed)
        self.in_flight = 0
        self.complex_in_flight = 0
        self.credits = CreditWindow()
        self.stats: collections.Counter = collections.Counter()
        self.client_id = os.environ.get("ZOHO_CLIENT_ID", "1000.SANDBOXCLIENT")
        self.client_secret = os.environ.get("ZOHO_CLIENT_SECRET", "sandbox-secret")
        main = os.environ.get("ZOHO_REFRESH_TOKEN", "1000.sandbox.refresh")
        self.refresh_tokens = {main: FULL_SCOPE, "1000.sandbox.readonly": "ZohoCRM.modules.READ,ZohoCRM.settings.READ"}
        # every other user of the org signs in with a token of their own (tests act as them; the bridge never does)
        self.token_users = {user_refresh_token(main, u["id"]): u for u in USERS if u is not USER}
        self.refresh_tokens |= {token: "ZohoCRM.modules.ALL,ZohoCRM.settings.READ" for token in self.token_users}

    def user_of(self, refresh_token: str) -> dict:
        """Whose token this is (the integration user's unless it is another user's)."""
        return self.token_users.get(refresh_token, USER)

    def set_config(self, changes: dict) -> Config:
        unknown = set(changes) - set(asdict(self.config))
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        if "edition" in changes and "concurrency_limit" not in changes:
            if changes["edition"] not in EDITION_CONCURRENCY:
                raise ValueError(f"unknown edition {changes['edition']!r}: one of {sorted(EDITION_CONCURRENCY)}")
            changes = changes | {"concurrency_limit": EDITION_CONCURRENCY[changes["edition"]]}
        self.config = Config(**(asdict(self.config) | changes))
        self.rng = random.Random(self.config.fault_seed)
        self.store.kv_set("config", json.dumps(asdict(self.config)))
        return self.config

    def charge(self, cost: int) -> bool:
        now = time.time()
        if self.credits.used(now) + cost > self.config.credits_per_day:
            return False
        self.credits.add(now, cost)
        return True


class CreditWindow:
    """The credits charged in the last 24 hours (Zoho's rolling day), with their running total: a charge costs the
    same at the millionth call as at the first (summing the window per call made every read slower than the last)."""

    def __init__(self):
        self._charges: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def used(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        while self._charges and self._charges[0][0] < now - 86400:
            self._total -= self._charges.popleft()[1]
        return self._total

    def add(self, now: float, cost: int) -> None:
        self._charges.append((now, cost))
        self._total += cost

    def clear(self) -> None:
        self._charges.clear()
        self._total = 0


def user_refresh_token(main_refresh_token: str, user_id: str) -> str:
    """The refresh token of one of the org's users (derived from the installation's own: nobody can guess it)."""
    return f"{main_refresh_token}-{user_id}"


def error(status: int, code: str, message: str, details: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "details": details or {}, "message": message, "status": "error"}, status)


def concurrency_refused() -> JSONResponse:
    """Zoho's answer to one request too many at once (the edition's concurrency, or the sub-concurrency of 10 for
    complex calls): the same 429 as for credits, with the message of a burst; retrying after a pause is right."""
    return error(429, "TOO_MANY_REQUESTS", "too many requests continuously, please try again after some time")


def too_many() -> JSONResponse:
    """The org's API credits for the rolling 24 hours are spent (a concurrency refusal is app.py's). Zoho answers
    both with 429 TOO_MANY_REQUESTS; its published files name no header or code that tells them apart, so the
    message says which, as Zoho's does ("... API limit ..." / "... credits ...")."""
    return error(429, "TOO_MANY_REQUESTS", "the API credit limit of the org for the rolling 24 hours is exhausted; "
                 "please try again after some time")


def sandbox_state(request: Request) -> SandboxState:
    """The app's state (a FastAPI dependency of every route)."""
    return request.app.state.sandbox


def module_or_error(name: str) -> meta.Module | JSONResponse:
    mod = meta.modules().get(name)
    return mod if mod else error(400, "INVALID_MODULE", "the module name given seems to be invalid",
                                 {"resource_path_index": 0})


async def body_json(request: Request) -> dict | JSONResponse:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return error(400, "INVALID_DATA", "body is not valid JSON")
    return body if isinstance(body, dict) else error(400, "INVALID_DATA", "body must be a JSON object")


def project(record: dict, fields: list[str]) -> dict:
    out = {name: record.get(name) for name in fields}
    out["id"] = record["id"]
    return out


# a route's `st: Sandbox` parameter: the app's SandboxState
Sandbox = Annotated[SandboxState, Depends(sandbox_state)]
