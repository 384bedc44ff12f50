"""Zoho CRM REST API v8 client: what the flows need, with Zoho's rules built in.

- OAuth refresh-token flow: the access token is cached and refreshed only when it is about to expire,
  or once when the API answers INVALID_TOKEN. Zoho lets one refresh token mint at most 10 access
  tokens per 10 minutes, and Airflow runs every task in its own process, so the cache is shared
  between processes through a private file (0600 in a 0700 folder; the file name is a hash, the
  content the access token and its expiry) and minting is serialized with a file lock.
- Retries: 429, 5xx, timeouts and dropped connections are retried with exponential backoff and full
  jitter, bounded by `max_retries`. A 4xx data error is never retried. Inserts are not retried after
  an ambiguous failure (the write may have happened); upserts and updates are idempotent and are.
- Paging: records lists follow `info.next_page_token` (so reads go past Zoho's 2,000-record `page`
  limit); COQL pages by `id > last id` (so reads go past COQL's OFFSET limit).
- Writes in batches of 100 with per-record outcomes in input order; bulk write (zip of CSV) for
  large loads.
- Secrets (client secret, refresh and access tokens) never appear in logs, reprs or exceptions.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import logging
import os
import random
import stat
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import urllib3

from include.zoho import limits

log = logging.getLogger(__name__)

MAX_BATCH = limits.BATCH_RECORDS
PAGE_TOKEN_LIMIT = 100_000   # records one Get Records walk may fetch with page_token (spec zoho-crm-v8.md, "Records")
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class ZohoError(Exception):
    """A request-level error from Zoho (or the sandbox), with Zoho's code and details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, path: str = ""):
        super().__init__(f"Zoho CRM {path}: HTTP {status} {code}: {message}" + (f" {details}" if details else ""))
        self.status, self.code, self.message, self.details, self.path = status, code, message, details or {}, path


class ZohoAuthError(ZohoError):
    """The OAuth token endpoint refused the credentials (wrong client, revoked refresh token, mint limit)."""


class ZohoCreditsExhausted(ZohoError):
    """The org's API credits for the rolling 24 hours are spent: the run stops with this, it does not retry."""


def credits_exhausted(body: dict) -> bool:
    """Whether a 429 means credits (final for the day) rather than concurrency (retry after a pause). Zoho answers
    both with TOO_MANY_REQUESTS and its published files name no field that tells them apart, so the message is read
    (it speaks of the API limit or of credits for the one, of "too many requests continuously" for the other);
    anything unclear counts as concurrency and is retried within max_retries."""
    text = f"{body.get('message', '')} {body.get('details', '')}".lower()
    return "credit" in text or "api limit" in text


class ZohoAmbiguousWriteError(ZohoError):
    """A non-idempotent write failed in a way that does not tell whether it was applied."""


@dataclass
class RecordOutcome:
    """The result of one record of a write, in the order the records were given."""

    index: int
    ok: bool
    id: str | None = None
    action: str | None = None          # insert / update (upsert), or None
    code: str | None = None            # SUCCESS or the Zoho error code
    api_name: str | None = None        # the field an error refers to
    message: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class BulkWriteResult:
    job_id: str
    state: str
    added: int
    updated: int
    skipped: int
    total: int
    rows: list[dict]                   # per input row: STATUS, RECORD_ID, ERRORS and the row's values


_TOKEN_CACHE: dict[str, tuple[str, float]] = {}
_TOKEN_LOCK = threading.Lock()


# Zoho's own domains (every data centre: .com, .eu, .in, .com.au, .com.cn, .jp, .sa, .ca, ...): the client's secrets
# and tokens go to these over TLS, or to a sandbox on this machine, and nowhere else.
ZOHO_DOMAINS = tuple(f"{name}.{tld}" for name in ("zoho", "zohoapis", "zohocloud")
                     for tld in ("com", "eu", "in", "com.au", "com.cn", "jp", "sa", "ca", "uk"))
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def endpoint_problem(url: str, extra_hosts: tuple[str, ...] = (), sandbox_hosts: tuple[str, ...] = ()
                     ) -> str | None:
    """Why the client may not send credentials to `url` (None: it may). Fail closed: https to a Zoho host (or to a
    host the connection explicitly allows, e.g. a company proxy); plain http only to the project's CRM sandbox, on
    loopback or on a host the connection names as one (`sandbox_hosts`: docker-compose's crm-sandbox)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in LOOPBACK or host in sandbox_hosts:
        return None if parts.scheme in ("http", "https") else f"{url}: scheme {parts.scheme!r} is not http(s)"
    if parts.scheme != "https":
        return f"{url}: the CRM is reached over TLS only (https), not {parts.scheme or 'no scheme'}"
    zoho = any(host == d or host.endswith("." + d) for d in ZOHO_DOMAINS)
    if not (zoho or host in extra_hosts):
        return (f"{url}: {host} is not a Zoho host; add it to the connection's extra allowed_hosts if it is yours "
                "(a proxy): the client sends its secrets and tokens to Zoho only")
    return None


def data_center(url: str) -> str | None:
    """The data center a Zoho API URL belongs to ("com", "eu", "com.cn", ...); None for a host that is not Zoho's."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    for name in ("zohoapis.", "zohocloud."):
        if name in host:
            return host.split(name, 1)[1]
    return None


def data_center_problem(api_url: str, api_domain: str | None) -> str | None:
    """Zoho's token answer names the org's API domain; a connection pointed at another data center would reach an
    org that does not exist there (or another one), so it is an error, not a warning."""
    ours, theirs = data_center(api_url), data_center(api_domain or "")
    if ours is None or theirs is None or ours == theirs:
        return None
    return (f"the org's API domain is {api_domain} (data center .{theirs}) but the connection's host is {api_url} "
            f"(.{ours}): set host, accounts_url and file_upload_url to the .{theirs} data center")


class ZohoCrmClient:
    def __init__(self, api_url: str, accounts_url: str, client_id: str, client_secret: str, refresh_token: str,
                 file_upload_url: str | None = None, zgid: str | None = None, timeout: float = 30.0,
                 max_retries: int = 6, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 session: requests.Session | None = None, token_cache_dir: str | None = None,
                 allowed_hosts: tuple[str, ...] = (), sandbox_hosts: tuple[str, ...] = ()):
        self.api_url = api_url.rstrip("/")
        self.accounts_url = accounts_url.rstrip("/")
        self.file_upload_url = (file_upload_url or api_url).rstrip("/")
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.sandbox_hosts = tuple(h.lower() for h in sandbox_hosts)
        for url in (self.api_url, self.accounts_url, self.file_upload_url):
            problem = endpoint_problem(url, self.allowed_hosts, self.sandbox_hosts)
            if problem:
                raise ZohoAuthError(0, "UNTRUSTED_ENDPOINT", problem)
        self._zgid: str | None = zgid
        self._org: dict | None = None
        self._subforms: dict[str, set[str]] = {}
        self.page_token_limit = PAGE_TOKEN_LIMIT
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._client_id, self._client_secret, self._refresh_token = client_id, client_secret, refresh_token
        self._cache_key = hashlib.sha256(f"{self.accounts_url}|{client_id}|{refresh_token}".encode()).hexdigest()
        self._cache_dir = token_cache_dir or default_token_cache_dir()
        self.session = session or requests.Session()
        self.stats = {"requests": 0, "retries": 0, "token_refreshes": 0, "credits": 0}

    def check_connection(self) -> tuple[bool, str]:
        """(ok, what a person reads): the org this client reaches, or why it cannot."""
        try:
            org = self.request("GET", "/crm/v8/org").json()["org"][0]
        except Exception as exc:
            return False, str(exc)
        return True, f"connected to {org.get('company_name')} (org {org.get('id')})"

    def __repr__(self) -> str:  # no secrets
        return f"ZohoCrmClient(api_url={self.api_url!r}, accounts_url={self.accounts_url!r})"

    # ------------------------------------------------------------------------------------------ OAuth
    def access_token(self, force_refresh: bool = False, rejected: str | None = None) -> str:
        """A valid access token: from this process, else from the shared file, else freshly minted.

        `force_refresh` (after INVALID_TOKEN) skips the token that was `rejected`, but still takes one
        another process minted after it (a later expiry), rather than minting again."""
        with _TOKEN_LOCK:
            cached = _TOKEN_CACHE.get(self._cache_key)
            if cached and not force_refresh and cached[1] > time.time() + 60:
                return cached[0]
            private_folder(self._cache_dir)
            path = os.path.join(self._cache_dir, f"{self._cache_key}.json")
            with open(path + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one process mints, the others then read its token
                shared = self._read_shared(path)
                newer = not force_refresh or (shared and shared[0] != rejected and (cached is None
                                                                                     or shared[1] > cached[1]))
                if shared and shared[1] > time.time() + 60 and newer:
                    _TOKEN_CACHE[self._cache_key] = shared
                    return shared[0]
                token, expires_in = self._mint_token()
                entry = (token, time.time() + expires_in)
                self._write_shared(path, entry)
                _TOKEN_CACHE[self._cache_key] = entry
                return token

    @staticmethod
    def _read_shared(path: str) -> tuple[str, float] | None:
        """The token another process cached; a file that is not a private regular file of ours is not trusted
        (someone planted it: it is minted over)."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                log.warning("ignoring the Zoho token cache file %s: not a private file of this user", path)
                return None
            with open(path) as f:
                data = json.load(f)
            return data["token"], float(data["expires_at"])
        except (OSError, ValueError, KeyError):
            return None

    @staticmethod
    def _write_shared(path: str, entry: tuple[str, float]) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"token": entry[0], "expires_at": entry[1]}, f)
        os.replace(tmp, path)

    def _mint_token(self) -> tuple[str, int]:
        url = f"{self.accounts_url}/oauth/v2/token"
        body = {"grant_type": "refresh_token", "client_id": self._client_id, "client_secret": self._client_secret,
                "refresh_token": self._refresh_token}
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.session.post(url, data=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.max_retries:
                    raise ZohoAuthError(0, "CONNECTION_FAILED", f"token endpoint unreachable: {type(exc).__name__}",
                                        path="/oauth/v2/token") from None
                self._sleep(attempt)
                continue
            if resp.status_code >= 500 and attempt < self.max_retries:
                self._sleep(attempt)
                continue
            try:
                payload = resp.json()
            except ValueError:
                payload = {}
            if resp.ok and payload.get("access_token"):  # Zoho: errors come as HTTP 200 without a token
                problem = data_center_problem(self.api_url, payload.get("api_domain"))
                if problem:
                    raise ZohoAuthError(0, "WRONG_DATA_CENTER", problem, path="/oauth/v2/token")
                self.stats["token_refreshes"] += 1
                return payload["access_token"], int(payload.get("expires_in", 3600))
            reason = payload.get("error") or f"HTTP {resp.status_code}"
            raise ZohoAuthError(resp.status_code, str(reason).upper().replace(" ", "_"),
                                f"token refresh refused: {reason} (check client id/secret and refresh token)",
                                path="/oauth/v2/token")
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------------- plumbing
    def _sleep(self, attempt: int) -> None:
        self.stats["retries"] += 1
        time.sleep(random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt)))

    def request(self, method: str, path: str, *, params: dict | None = None, json: dict | None = None,
                headers: dict | None = None, files: dict | None = None, base: str | None = None,
                idempotent: bool = True, allow: tuple[int, ...] = ()) -> requests.Response:
        """One API call with auth, bounded retries and Zoho error decoding."""
        url = f"{self.api_url if base is None else base}{path}"
        problem = endpoint_problem(url, self.allowed_hosts, self.sandbox_hosts)
        if problem:  # a URL handed in from elsewhere (a response) never gets the token
            raise ZohoAuthError(0, "UNTRUSTED_ENDPOINT", problem, path=path)
        refreshed = False
        attempt = 0
        while True:
            token = self.access_token()
            hdrs = {"Authorization": f"Zoho-oauthtoken {token}"} | (headers or {})
            self.stats["requests"] += 1
            self.stats["credits"] += limits.call_credits(method, path, json)
            try:
                resp = self.session.request(method, url, params=params, json=json, headers=hdrs, files=files,
                                            timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # A connect failure never reached Zoho; anything later may have been applied.
                if not idempotent and not _never_sent(exc):
                    raise ZohoAmbiguousWriteError(0, "CONNECTION_LOST", f"{type(exc).__name__} after sending; the "
                                                  "write may or may not have been applied", path=path) from None
                if attempt >= self.max_retries:
                    raise ZohoError(0, "CONNECTION_FAILED", f"{type(exc).__name__} after {attempt + 1} attempts",
                                    path=path) from None
                log.warning("Zoho %s %s: %s, retrying", method, path, type(exc).__name__)
                self._sleep(attempt)
                attempt += 1
                continue
            if resp.status_code < 400 or resp.status_code in allow:
                return resp
            body = _json(resp)
            code = body.get("code", f"HTTP_{resp.status_code}")
            if resp.status_code == 401 and code == "INVALID_TOKEN" and not refreshed:
                self.access_token(force_refresh=True, rejected=token)
                refreshed = True
                continue
            if resp.status_code == 429 and credits_exhausted(body):
                # retrying cannot help before the rolling 24 hours free credits; every retry would cost one more
                raise ZohoCreditsExhausted(429, code, body.get("message", "API credits exhausted"),
                                           body.get("details"), path)
            retryable = resp.status_code in RETRYABLE_STATUS and (idempotent or resp.status_code == 429)
            if retryable and attempt < self.max_retries:
                log.warning("Zoho %s %s: HTTP %s %s, retrying", method, path, resp.status_code, code)
                self._sleep(attempt)
                attempt += 1
                continue
            if resp.status_code == 400 and isinstance(body.get("data"), list):
                return resp  # every record failed: per-record errors are in the body
            cls = ZohoAmbiguousWriteError if resp.status_code >= 500 and not idempotent else ZohoError
            raise cls(resp.status_code, code, body.get("message", resp.reason), body.get("details"), path)

    # ------------------------------------------------------------------------------------------- reads
    def iter_records(self, module: str, fields: Iterable[str], modified_since: dt.datetime | str | None = None,
                     sort_by: str = "id", sort_order: str = "asc", per_page: int = 200) -> Iterator[dict]:
        """Every record (or every one modified after `modified_since`), following page tokens. Zoho serves at most
        100,000 records through page tokens (PAGINATION_LIMIT_EXCEEDED beyond): past that this continues with COQL
        by id, so a read never stops short."""
        params = {"fields": ",".join(fields), "per_page": per_page, "sort_by": sort_by, "sort_order": sort_order}
        headers = {"If-Modified-Since": zoho_datetime(modified_since)} if modified_since else None
        fields = list(fields)
        delivered, last_id = 0, None
        while True:
            if delivered >= self.page_token_limit:  # Zoho's page tokens stop here: the rest by COQL, in id order
                if (sort_by, sort_order) != ("id", "asc"):
                    raise ZohoError(400, "PAGINATION_LIMIT_EXCEEDED", f"{module}: more than {self.page_token_limit} "
                                    f"records sorted by {sort_by} {sort_order}; read them by id or by bulk read",
                                    path=f"/crm/v8/{module}")
                where = f"Modified_Time > '{zoho_datetime(modified_since)}'" if modified_since else None
                yield from self.iter_coql(module, fields, where, after_id=last_id)
                return
            resp = self.request("GET", f"/crm/v8/{module}", params=params, headers=headers, allow=(304,))
            if resp.status_code in (204, 304):
                return
            body = resp.json()
            rows = body.get("data", [])
            yield from self._with_subforms(module, fields, rows)
            delivered += len(rows)
            last_id = int(rows[-1]["id"]) if rows else last_id
            info = body.get("info", {})
            if not info.get("more_records") or not info.get("next_page_token"):
                return
            params = {k: v for k, v in params.items() if k != "page"} | {"page_token": info["next_page_token"]}

    def _with_subforms(self, module: str, fields: list[str], rows: list[dict]) -> list[dict]:
        """Rows with the subform fields asked for. Zoho documents a record's subform rows through GET
        /{module}/{id} (v8 Subform API, "Get Subform Data") and does not say whether list calls carry them: a row
        that lacks one is completed by that GET (1 credit each); a row that carries them is kept as it is."""
        missing = {f for row in rows for f in fields if f not in row}  # a list call answers every field asked
        wanted = [f for f in fields if f in missing and f in self.subform_fields(module)] if missing else []
        for row in rows:
            if wanted and any(f not in row for f in wanted):
                full = self.get_record(module, row["id"]) or {}
                self.stats["subform_reads"] = self.stats.get("subform_reads", 0) + 1
                row.update({f: full.get(f) for f in wanted})
        return rows

    def subform_fields(self, module: str) -> set[str]:
        """The module's fields of data_type subform (line items included), from field metadata once per client."""
        if module not in self._subforms:
            self._subforms[module] = {n for n, f in self.fields(module).items() if f.get("data_type") == "subform"}
        return self._subforms[module]

    def get_record(self, module: str, record_id: str, external_field: str | None = None) -> dict | None:
        headers = {"X-EXTERNAL": f"{module}.{external_field}"} if external_field else None
        resp = self.request("GET", f"/crm/v8/{module}/{record_id}", headers=headers)
        return None if resp.status_code == 204 else resp.json()["data"][0]

    def timeline(self, module: str, record_id: str, per_page: int = 200, max_pages: int = 5) -> Iterator[dict]:
        """The record's timeline (GET /{module}/{id}/__timeline), newest first: who changed which field when."""
        for page in range(1, max_pages + 1):
            resp = self.request("GET", f"/crm/v8/{module}/{record_id}/__timeline",
                                params={"sort_by": "audited_time", "sort_order": "desc", "per_page": per_page,
                                        "page": page})
            if resp.status_code == 204:
                return
            body = resp.json()
            yield from body.get("__timeline") or []
            if not (body.get("info") or {}).get("more_records"):
                return

    def search(self, module: str, criteria: str, fields: Iterable[str] | None = None) -> list[dict]:
        out, page = [], 1
        while True:
            params = {"criteria": criteria, "page": page} | ({"fields": ",".join(fields)} if fields else {})
            resp = self.request("GET", f"/crm/v8/{module}/search", params=params)
            if resp.status_code == 204:
                return out
            body = resp.json()
            out.extend(body["data"])
            if not body.get("info", {}).get("more_records"):
                return out
            page += 1

    def coql(self, query: str) -> tuple[list[dict], bool]:
        resp = self.request("POST", "/crm/v8/coql", json={"select_query": query})
        if resp.status_code == 204:
            return [], False
        body = resp.json()
        return body.get("data", []), bool(body.get("info", {}).get("more_records"))

    def iter_coql(self, module: str, fields: Iterable[str], where: str | None = None,
                  page_size: int = 2000, after_id: int | None = None) -> Iterator[dict]:
        """All matching records in id order (after `after_id`), paging by id (COQL's OFFSET stops at 100,000)."""
        last = after_id or 0
        cols = ", ".join(dict.fromkeys(["id", *fields]))
        while True:
            cond = f"id > {last}" + (f" and ({where})" if where else "")
            rows, more = self.coql(f"select {cols} from {module} where {cond} order by id asc limit {page_size}")
            yield from rows
            if not more or not rows:
                return
            last = int(rows[-1]["id"])

    def fields(self, module: str) -> dict[str, dict]:
        resp = self.request("GET", "/crm/v8/settings/fields", params={"module": module})
        return {f["api_name"]: f for f in resp.json().get("fields", [])}

    def check_fields(self, module: str, expected: dict[str, str]) -> list[str]:
        """Problems with the CRM's fields against {api_name: data_type}; empty when all is as mapped."""
        actual = self.fields(module)
        problems = []
        for name, data_type in expected.items():
            if name not in actual:
                problems.append(f"{module}.{name} does not exist in the CRM")
            elif data_type and actual[name]["data_type"] != data_type:
                problems.append(f"{module}.{name} is {actual[name]['data_type']}, expected {data_type}")
        return problems

    # ------------------------------------------------------------------------------------------ writes
    def write(self, module: str, records: list[dict], mode: str = "upsert",
              duplicate_check_fields: list[str] | None = None, max_workers: int = 1,
              trigger: list[str] | None = None) -> list[RecordOutcome]:
        """Insert / update / upsert in batches of 100; outcomes in input order."""
        if mode not in ("insert", "update", "upsert"):
            raise ValueError(f"mode must be insert, update or upsert, not {mode!r}")
        batches = [(start, records[start:start + MAX_BATCH]) for start in range(0, len(records), MAX_BATCH)]

        def send(batch: tuple[int, list[dict]]) -> list[RecordOutcome]:
            start, chunk = batch
            body = {"data": chunk, "trigger": trigger if trigger is not None else []}
            if duplicate_check_fields:
                body["duplicate_check_fields"] = duplicate_check_fields  # in the body: a header is ignored
            path = f"/crm/v8/{module}/upsert" if mode == "upsert" else f"/crm/v8/{module}"
            resp = self.request("POST" if mode != "update" else "PUT", path, json=body,
                                idempotent=mode != "insert")
            return [_outcome(start + i, item) for i, item in enumerate(resp.json().get("data", []))]

        if max_workers <= 1 or len(batches) <= 1:
            results = [send(b) for b in batches]
        else:
            with ThreadPoolExecutor(max_workers=max_workers) as pool:
                results = list(pool.map(send, batches))
        return [o for chunk in results for o in chunk]

    def upsert(self, module: str, records: list[dict], duplicate_check_fields: list[str] | None = None,
               **kw) -> list[RecordOutcome]:
        return self.write(module, records, "upsert", duplicate_check_fields, **kw)

    def insert(self, module: str, records: list[dict], **kw) -> list[RecordOutcome]:
        return self.write(module, records, "insert", **kw)

    def update(self, module: str, records: list[dict], **kw) -> list[RecordOutcome]:
        return self.write(module, records, "update", **kw)

    def delete(self, module: str, ids: list[str]) -> list[RecordOutcome]:
        out = []
        for start in range(0, len(ids), MAX_BATCH):
            resp = self.request("DELETE", f"/crm/v8/{module}", params={"ids": ",".join(ids[start:start + MAX_BATCH])})
            out += [_outcome(start + i, item) for i, item in enumerate(resp.json().get("data", []))]
        return out

    # -------------------------------------------------------------------------------------------- bulk
    def bulk_write(self, module: str, rows: list[dict], find_by: str, operation: str = "upsert",
                   poll_interval: float = 1.0, timeout: float = 3600) -> BulkWriteResult:
        """Upload rows as zipped CSV (25,000 rows per job), run the job, wait, and read per-row results."""
        return self.bulk_write_wait(self.bulk_write_start(module, rows, find_by, operation), poll_interval, timeout)

    def bulk_write_start(self, module: str, rows: list[dict], find_by: str, operation: str = "upsert") -> list[str]:
        """The first half of bulk_write: upload and start the jobs (25,000 rows each); their ids, for
        bulk_write_wait. The jobs run in the CRM meanwhile: a caller can prepare its next page, or start it."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        step = limits.BULK_WRITE_ROWS_PER_JOB
        return [self._bulk_write_job(module, rows[start:start + step], columns, find_by, operation)
                for start in range(0, len(rows), step)]

    def bulk_write_wait(self, job_ids: list[str], poll_interval: float = 1.0, timeout: float = 3600
                        ) -> BulkWriteResult:
        """The second half of bulk_write: wait for the jobs bulk_write_start began; their rows' results in order."""
        results = BulkWriteResult("", "COMPLETED", 0, 0, 0, 0, [])
        for job_id in job_ids:
            part = self._bulk_write_result(job_id, poll_interval, timeout)
            results.job_id = ",".join(filter(None, [results.job_id, part.job_id]))
            results.state = part.state if part.state != "COMPLETED" else results.state
            for name in ("added", "updated", "skipped", "total"):
                setattr(results, name, getattr(results, name) + getattr(part, name))
            results.rows.extend(part.rows)
        return results

    def _bulk_write_job(self, module, rows, columns, find_by, operation) -> str:
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(columns)
        for row in rows:
            out.writerow([_csv_value(row.get(c)) for c in columns])
        blob = io.BytesIO()
        with zipfile.ZipFile(blob, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{module}.csv", buf.getvalue())
        upload = self.request("POST", "/crm/v8/upload", base=self.file_upload_url,
                              headers={"feature": "bulk-write", "X-CRM-ORG": self.zgid()},
                              files={"file": (f"{module}.zip", blob.getvalue(), "application/zip")}, idempotent=False)
        file_id = upload.json()["details"]["file_id"]
        # ignore_empty false: an ERP value cleared to empty clears the CRM field too (true would keep the old one)
        job = self.request("POST", "/crm/bulk/v8/write", idempotent=False, json={
            "operation": operation, "ignore_empty": False,
            "resource": [{"type": "data", "module": {"api_name": module}, "file_id": file_id, "find_by": find_by,
                          "field_mappings": [{"api_name": c, "index": i} for i, c in enumerate(columns)]}]})
        return job.json()["details"]["id"]

    def _bulk_write_result(self, job_id: str, poll_interval: float, timeout: float) -> BulkWriteResult:
        status = self._wait_for_job("write", job_id, "status", ("COMPLETED", "FAILED"), poll_interval, timeout)
        files = [r["file"] for r in status.get("resource", []) if "file" in r]
        result = BulkWriteResult(job_id, status["status"], *(sum(f.get(k, 0) for f in files) for k in
                                                              ("added_count", "updated_count", "skipped_count",
                                                               "total_count")), [])
        if status.get("result", {}).get("download_url"):
            url = status["result"]["download_url"]
            resp = self.request("GET", url, base="" if url.startswith("http") else self.api_url)
            with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
                result.rows = list(csv.DictReader(io.TextIOWrapper(zf.open(zf.namelist()[0]), encoding="utf-8")))
        return result

    def _wait_for_job(self, kind: str, job_id: str, state_key: str, final: tuple[str, ...], poll_interval: float,
                      timeout: float) -> dict:
        """Poll a bulk job until it reaches a final state (write jobs say `status`, read jobs `state`).

        Zoho answers bulk-write job details as one top-level object and bulk-read job details inside `data[]`
        (crm-oas v8.0/bulk_write.json Bulk_Write_Response, bulk_read.json Response_Wrapper); both shapes are read
        for either kind. Each poll costs an API credit, so the interval grows by half up to 10 s."""
        deadline = time.monotonic() + timeout
        wait = poll_interval
        while True:
            job = bulk_job(self.request("GET", f"/crm/bulk/v8/{kind}/{job_id}").json(), state_key, kind, job_id)
            self.stats["job_polls"] = self.stats.get("job_polls", 0) + 1
            if job[state_key] in final:
                return job
            if time.monotonic() > deadline:
                raise ZohoError(0, "TIMEOUT", f"bulk {kind} job {job_id} not finished after {timeout} s",
                                path=f"/crm/bulk/v8/{kind}")
            time.sleep(wait)
            # a poll costs 1 credit against the job's 500, a late look a whole wait: grow gently, to 10 s
            wait = min(10.0, wait * 1.5)

    def zgid(self) -> str:
        """The org's zgid, which the bulk-write upload wants in X-CRM-ORG (not the org id): from the org API, once
        per client."""
        if self._zgid is None:
            self._zgid = str(self.org()["zgid"])
        return self._zgid

    def org(self) -> dict:
        """GET /crm/v8/org, once per client (zoho/crm-oas v8.0/org.json: {"org": [Org]})."""
        if self._org is None:
            self._org = self.request("GET", "/crm/v8/org").json()["org"][0]
        return self._org

    def edition(self) -> str | None:
        """The org's edition (license_details.paid_type, e.g. "enterprise"): what its concurrency limit is."""
        return (self.org().get("license_details") or {}).get("paid_type")

    def bulk_read(self, module: str, fields: list[str], criteria: dict | None = None,
                  poll_interval: float = 1.0, timeout: float = 3600) -> Iterator[dict]:
        """Export records as CSV through bulk read jobs (200,000 rows per page)."""
        page = 1
        while True:
            query = {"module": {"api_name": module}, "fields": fields, "page": page}
            if criteria:
                query["criteria"] = criteria
            job_id = self.request("POST", "/crm/bulk/v8/read", json={"query": query, "file_type": "csv"}
                                  ).json()["data"][0]["details"]["id"]
            job = self._wait_for_job("read", job_id, "state", ("COMPLETED", "FAILURE"), poll_interval, timeout)
            if job["state"] != "COMPLETED":
                raise ZohoError(0, "BULK_READ_FAILED", f"bulk read job {job_id} failed", path="/crm/bulk/v8/read")
            url = job["result"]["download_url"]
            resp = self.request("GET", url, base="" if url.startswith("http") else self.api_url)
            with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
                yield from csv.DictReader(io.TextIOWrapper(zf.open(zf.namelist()[0]), encoding="utf-8"))
            if not job["result"].get("more_records"):
                return
            page += 1


def zoho_datetime(value: dt.datetime | str) -> str:
    """A date-time as Zoho takes it in COQL, criteria and If-Modified-Since: seconds and the offset
    (2019-07-25T15:26:49+05:30); fractions are floored (a cursor then re-reads at most one second more)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{value}: a Zoho date-time needs a time zone")
    return value.replace(microsecond=0).isoformat()


def bulk_job(body: dict, state_key: str, kind: str, job_id: str) -> dict:
    """The job object of a bulk job-details answer, top-level (bulk write) or in data[] (bulk read)."""
    if isinstance(body, dict) and state_key in body:
        return body
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict) and state_key in data[0]:
        return data[0]
    raise ZohoError(0, "UNEXPECTED_RESPONSE", f"bulk {kind} job {job_id}: the job details have no {state_key!r}: "
                    f"{str(body)[:200]}", path=f"/crm/bulk/v8/{kind}/{job_id}")


def _never_sent(exc: Exception) -> bool:
    """True when the request certainly did not reach the server (connection refused or connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _json(resp: requests.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _outcome(index: int, item: dict) -> RecordOutcome:
    details = item.get("details") or {}
    ok = item.get("status") == "success"
    return RecordOutcome(index=index, ok=ok, id=details.get("id") if ok else None, action=item.get("action"),
                         code=item.get("code"), api_name=None if ok else details.get("api_name"),
                         message=item.get("message"), details=details)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return str(value.get("id", ""))
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def default_token_cache_dir() -> str:
    """Where processes share the access token: under AIRFLOW_HOME (or ~/.cache), never a guessable shared /tmp
    folder another user could create first."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "zoho-token-cache")


def private_folder(path: str) -> None:
    """Create the token cache folder (0700), or check that the existing one is a real folder of this user that
    nobody else can read or write; anything else is refused with the reason (fail closed)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    problem = ("is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a folder" if not stat.S_ISDIR(st.st_mode)
               else f"belongs to uid {st.st_uid}, not {os.getuid()}" if st.st_uid != os.getuid()
               else f"is open to others (mode {st.st_mode & 0o777:o})" if st.st_mode & 0o077 else None)
    if problem:
        raise ZohoAuthError(0, "UNSAFE_TOKEN_CACHE", f"the token cache folder {path} {problem}: remove it or set "
                                                     "the connection's extra token_cache_dir to a private folder")


CONNECTION_EXTRAS = {"accounts_url", "file_upload_url", "refresh_token", "zgid", "client_id", "client_secret",
                     "timeout", "max_retries", "backoff_base", "backoff_max", "token_cache_dir", "allowed_hosts",
                     "sandbox_hosts"}


def client_from_connection(conn) -> ZohoCrmClient:
    """A client from a connection's fields (an Airflow Connection or anything with conn_id, host, schema, port,
    login, password and extra_dejson):
    - host: the API base URL, e.g. https://www.zohoapis.com.cn (China DC), https://www.zohoapis.com (US),
      https://sandbox.zohoapis.com (a Zoho sandbox org) or http://127.0.0.1:8765 (the project's sandbox);
      a host without scheme gets https://;
    - login / password: OAuth client id / client secret (or extra client_id / client_secret);
    - extra: accounts_url, file_upload_url, refresh_token, zgid (optional: read from the org API), timeout,
      max_retries, backoff_base, backoff_max, token_cache_dir, allowed_hosts (hosts besides Zoho's that may get
      the credentials, e.g. a proxy; https only), sandbox_hosts (hosts of the project's CRM sandbox that may be
      reached over plain http; one on loopback needs no entry)."""
    extra = conn.extra_dejson or {}
    unknown = sorted(set(extra) - CONNECTION_EXTRAS)
    if unknown:  # fail closed: a misspelt key would otherwise be a setting silently not applied
        hint = " (org_id is gone: the bulk upload needs the zgid, which the client reads from the org API)" \
            if "org_id" in unknown else ""
        raise ValueError(f"connection '{conn.conn_id}': unknown extra {', '.join(unknown)}{hint}; known: "
                         f"{', '.join(sorted(CONNECTION_EXTRAS))}")
    host = (conn.host or "").rstrip("/")
    if host and "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    missing = [name for name, value in (("host", host), ("accounts_url", extra.get("accounts_url")),
                                        ("client_id", conn.login or extra.get("client_id")),
                                        ("client_secret", conn.password or extra.get("client_secret")),
                                        ("refresh_token", extra.get("refresh_token"))) if not value]
    if missing:
        raise ValueError(f"connection '{conn.conn_id}' lacks {', '.join(missing)} (see docs/configuration.md)")
    return ZohoCrmClient(
        api_url=host, accounts_url=extra["accounts_url"], file_upload_url=extra.get("file_upload_url"),
        client_id=conn.login or extra["client_id"], client_secret=conn.password or extra["client_secret"],
        refresh_token=extra["refresh_token"], zgid=str(extra["zgid"]) if extra.get("zgid") else None,
        timeout=float(extra.get("timeout", 30)), max_retries=int(extra.get("max_retries", 6)),
        backoff_base=float(extra.get("backoff_base", 0.5)), backoff_max=float(extra.get("backoff_max", 30)),
        token_cache_dir=extra.get("token_cache_dir"), allowed_hosts=tuple(extra.get("allowed_hosts") or ()),
        sandbox_hosts=tuple(extra.get("sandbox_hosts") or ()))
