"""The Great Expectations gate on a staged batch.

The suite is data: expectations/<flow>.json, one expectation list in GX 1.x's JSON shape, each
expectation marked `"meta": {"level": "batch" | "row"}`, and gate settings in the suite's `meta`:
`max_failing_share` (share of rows that may fail row-level expectations and be quarantined while the
rest loads; above it nothing loads), `min_rows_for_share` (batches smaller than this are never blocked by
the share: in flows fed by people, a few bad records among few are each quarantined, not a systemic fault)
and `row_count` bounds relative to the previous run.

- Batch-level expectations (row count, columns) run once inside PostgreSQL through GX's SQL data
  source: any failure stops the whole batch.
- Row-level expectations run on bounded chunks read with a server-side cursor (`chunk_rows` at a time),
  so 1,000,000 staged rows never sit in memory together; GX reports the failing rows by `row_no`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")
GX_URL_VARIABLE = "BRIDGE_GATE_DB_URL"


@dataclass
class GateResult:
    flow: str
    batch_id: str
    rows: int
    may_load: bool
    bad_rows: dict[int, list[str]] = field(default_factory=dict)   # row_no -> failed expectations
    failures: dict[str, int] = field(default_factory=dict)         # expectation -> failing rows (row level)
    batch_failures: list[str] = field(default_factory=list)        # failed batch-level expectations
    threshold: float = 0.0
    min_rows_for_share: int = 0
    seconds: float = 0.0
    docs_url: str | None = None                                     # GX Data Docs of this batch
    unit: str | None = None        # what is quarantined (an order's crm_id): the share counts these, not rows
    units: int = 0
    bad_units: int = 0

    @property
    def failing_share(self) -> float:
        if self.unit:
            return self.bad_units / self.units if self.units else 0.0
        return len(self.bad_rows) / self.rows if self.rows else 0.0

    def summary(self) -> list[str]:
        lines = [f"{f}" for f in self.batch_failures]
        lines += [f"{name}: {n:,} rows" for name, n in sorted(self.failures.items(), key=lambda kv: -kv[1])]
        if self.bad_rows and not self.batch_failures:
            failed, of, what = (self.bad_units, self.units, f"{self.unit} values") if self.unit else \
                (len(self.bad_rows), self.rows, "rows")
            lines.append(f"{failed:,} of {of:,} {what} failed ({self.failing_share:.1%}; "
                         f"the limit is {self.threshold:.1%})")
        return lines


def load_suite(flow: str, directory: Path = EXPECTATIONS_DIR) -> dict:
    path = directory / f"{flow}.json"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for flow {flow}: {path} is missing")
    from include.bridge import config

    suite = json.loads(path.read_text(encoding="utf-8"))
    config.check(f"suite {path.name}", suite, config.SUITE)  # strict: a misspelled gate setting is an error
    if not 0 <= suite["meta"]["max_failing_share"] <= 1:
        raise ValueError(f"suite {path.name}: meta.max_failing_share must be between 0 and 1")
    for n, e in enumerate(suite.get("expectations", [])):
        if (e.get("meta") or {}).get("level") not in ("batch", "row"):
            raise ValueError(f"{path.name}: expectation {n} ({e.get('type')}) needs meta.level 'batch' or 'row'")
    return suite


def describe(config) -> str:
    """expect_column_values_to_be_between(on_hand, min_value=0): readable for quarantine reasons and alerts."""
    kwargs = {k: (f"{v:g}" if abs(v) >= 1e6 else int(v)) if isinstance(v, float) and v.is_integer() else v
              for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kwargs.pop("column", None)
    for k, v in kwargs.items():
        if isinstance(v, list | set | tuple) and len(v) > 10:  # a reason stays short
            kwargs[k] = f"<{len(v)} values>"
    args = ([column] if column else []) + [f"{k}={v}" for k, v in kwargs.items() if not isinstance(v, dict)]
    return f"{config.type}({', '.join(str(a) for a in args)})"


def column_of(reason: str) -> str:
    """The column a reason made by describe() names ('' for table-level expectations): flows that show a
    person a readable text per column look it up by this."""
    return reason.split("(", 1)[1].split(",")[0].split(")")[0] if "(" in reason else ""


def record_row_results(result: GateResult, checked: list) -> None:
    """Row-level outcomes of one chunk into `result`: failing rows by row_no. Fail closed: an expectation that
    errored, or could not name its failing rows, fails the batch."""
    for r in checked:
        if r.success:
            continue
        name = describe(r.expectation_config)
        failing = r.result.get("unexpected_index_list")
        error = evaluation_error(r)
        if error or failing is None:
            if name not in {f.split(": could not", 1)[0] for f in result.batch_failures}:
                result.batch_failures.append(f"{name}: could not be evaluated ({error or 'no failing rows'})")
            continue
        result.failures[name] = result.failures.get(name, 0) + len(failing)
        for item in failing:
            result.bad_rows.setdefault(int(item["row_no"]), []).append(name)


def evaluation_error(r) -> str | None:
    """Why GX could not evaluate an expectation (a missing column, a type it cannot compare), or None."""
    info = r.exception_info or {}
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for i in infos:
        if i.get("raised_exception"):
            return (i.get("exception_message") or "an exception").splitlines()[0][:200]
    return None


def count_units(conn, table: str, batch_id: str, unit_column: str, bad_rows: list[int]) -> tuple[int, int]:
    """(units in the batch, units with a failing row); rows without a unit count as one unit."""
    with conn.cursor() as cur:
        cur.execute(f"""SELECT count(DISTINCT u), count(DISTINCT u) FILTER (WHERE row_no = ANY (%s))
                        FROM (SELECT coalesce({unit_column}::text, '') AS u, row_no FROM {table}
                              WHERE batch_id = %s) t""", (bad_rows, batch_id))
        units, bad = cur.fetchone()
    conn.commit()
    return int(units), int(bad)


def non_finite_rows(conn, table: str, batch_id: str, columns: list[str]) -> list[tuple[int, str]]:
    """(row_no, column) of NaN / Infinity / -Infinity in the batch's numeric columns: GX's range checks skip them,
    so the gate names them itself, in one query inside PostgreSQL."""
    schema, _, name = table.rpartition(".")
    with conn.cursor() as cur:
        cur.execute("""SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
                         AND data_type IN ('numeric', 'double precision', 'real') AND column_name = ANY (%s)
                       ORDER BY ordinal_position""",
                    (schema or "public", name, columns))
        numeric = [r[0] for r in cur.fetchall()]
        if not numeric:
            return []
        bad = {c: f"{c} IN ('NaN', 'Infinity', '-Infinity')" for c in numeric}
        cur.execute(f"""SELECT row_no, ARRAY[{', '.join(f"CASE WHEN {cond} THEN '{c}' END" for c, cond in bad.items())}]
                        FROM {table} WHERE batch_id = %s AND ({' OR '.join(bad.values())}) ORDER BY row_no""",
                    (batch_id,))  # one scan of the batch, whatever the number of numeric columns
        return [(int(row_no), c) for row_no, cols in cur.fetchall() for c in cols if c]


# Expectations on the batch's shape, not its rows: GX reads a query asset's columns by fetching its rows (+290 MB at
# 1,000,000 staged rows), so these run on the same query with LIMIT 0 — the same columns, no rows.
SHAPE_ONLY = {"expect_table_columns_to_match_set"}


def validate_batch(ctx, sqlalchemy_url: str, flow: str, query: str, expectations: list[dict],
                   parameters: dict | None) -> list:
    """The batch-level expectations through GX's PostgreSQL data source: their results."""
    import great_expectations as gx

    parts = {"shape": [e for e in expectations if e["type"] in SHAPE_ONLY],
             "batch": [e for e in expectations if e["type"] not in SHAPE_ONLY]}
    # the URL (with its password) reaches GX only through the environment: GX keeps the `${...}` reference in its
    # datasource config (and so in anything it renders or logs), never the password itself
    os.environ[GX_URL_VARIABLE] = sqlalchemy_url
    results = []
    try:
        source = ctx.data_sources.add_postgres("staging", connection_string="${" + GX_URL_VARIABLE + "}")
        for name, chosen in parts.items():
            if not chosen:
                continue
            asset = source.add_query_asset(name, query=query + (" LIMIT 0" if name == "shape" else ""))
            batch_suite = ctx.suites.add(gx.ExpectationSuite(name=f"{flow}.{name}", expectations=chosen))
            batch_run = ctx.validation_definitions.add(gx.ValidationDefinition(
                name=f"{flow}.{name}", data=asset.add_batch_definition_whole_table("all"), suite=batch_suite))
            results += batch_run.run(expectation_parameters=parameters or {}).results
    finally:  # also when GX fails: the URL does not outlive the validation in this process's environment
        os.environ.pop(GX_URL_VARIABLE, None)
    return results


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def build_docs(conn, ctx, flow: str, batch_id: str, docs_dir: str) -> str:
    """Build the Data Docs site; this batch's validation pages (the context is this gate's own, so its store holds
    only them), relative to the Data Docs root, go in the batch's ledger row (the operator console links a run to
    them). Returns the site's index URL."""
    started = time.monotonic()
    os.makedirs(docs_dir, exist_ok=True)
    # Two runs at once build into one site: GX rewrites the index and shared pages, and a page looked up while the
    # other process writes can be missing. One build at a time (an flock the OS drops if a process dies).
    with open(os.path.join(docs_dir, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = ctx.build_data_docs(site_names=["bridge"])["bridge"]
        urls = [url["site_url"] for key in ctx.validation_results_store.list_keys()
                for url in ctx.get_docs_sites_urls(resource_identifier=key, site_name="bridge")]
    root = os.path.dirname(os.path.abspath(docs_dir))
    if None in urls:  # the report is missing a page; the gate's verdict does not depend on it
        log.warning("gate %s: %d of %d Data Docs pages of batch %s were not written", flow, urls.count(None),
                    len(urls), batch_id)
    pages = sorted(os.path.relpath(u.removeprefix("file://"), root) for u in urls if u)
    with conn.cursor() as cur:
        cur.execute("""UPDATE bridge.run_ledger SET gate_docs = gate_docs || jsonb_build_object(%s::text, %s::jsonb),
                              step_seconds = step_seconds || jsonb_build_object('data_docs', %s)
                       WHERE batch_id = %s""", (flow, json.dumps(pages), round(time.monotonic() - started, 3),
                                                 batch_id))
    conn.commit()
    return index


def run_gate(conn, sqlalchemy_url: str, *, flow: str, table: str, batch_id: str, columns: list[str],
             parameters: dict | None = None, chunk_rows: int = 25_000, suite: dict | None = None,
             docs_dir: str | None = None, unit_column: str | None = None) -> GateResult:
    """Validate the staged rows of `batch_id` in `table` (which has batch_id and row_no columns).

    With `docs_dir`, GX Data Docs of this batch's validations (batch level and every chunk) are built
    there and `docs_url` points at their index. With `unit_column` (an order's crm_id, a deal's id), the share of
    failures is counted in those units, not in rows: one order with many bad lines is one bad order, and does not
    hold back the others."""
    import great_expectations as gx

    for name in (table, batch_id, *columns, *([unit_column] if unit_column else [])):
        if not SAFE_NAME.match(name):
            raise ValueError(f"unsafe identifier for the gate: {name!r}")
    started = time.monotonic()
    suite = suite or load_suite(flow)
    settings = suite.get("meta") or {}
    threshold = float(settings.get("max_failing_share", 0.0))
    by_level = {level: [e for e in suite["expectations"] if e["meta"]["level"] == level] for level in ("batch", "row")}
    ctx = _context()
    if docs_dir:
        ctx.add_data_docs_site(site_name="bridge", site_config={
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir}})
    result = GateResult(flow, batch_id, 0, True, threshold=threshold,
                        min_rows_for_share=int(settings.get("min_rows_for_share", 0)))

    # batch level, inside PostgreSQL
    cols = ", ".join(["row_no", *columns])
    outcome = validate_batch(ctx, sqlalchemy_url, flow, f"SELECT {cols} FROM {table} WHERE batch_id = '{batch_id}'",
                             by_level["batch"], parameters)
    for r in outcome:
        if not r.success:
            observed = r.result.get("observed_value")
            result.batch_failures.append(f"{describe(r.expectation_config)}: observed {observed}")

    # row level, chunk by chunk
    row_suite = ctx.suites.add(gx.ExpectationSuite(name=f"{flow}.row", expectations=by_level["row"]))
    frames = ctx.data_sources.add_pandas("chunks").add_dataframe_asset("chunk")
    row_run = ctx.validation_definitions.add(gx.ValidationDefinition(
        name=f"{flow}.row", data=frames.add_batch_definition_whole_dataframe("chunk"), suite=row_suite))
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["row_no"],
                     "partial_unexpected_count": 0}
    import pandas as pd
    import psycopg2.extensions

    with conn.cursor(name=f"gate_{int(time.time() * 1000)}") as cur:  # server-side: bounded memory
        cur.itersize = chunk_rows
        # numerics as floats: GX checks a float column vectorised, a column of Decimals one object at a time (twice
        # as slow at 100k rows). Ranges and sums lose nothing a check sees; a value too big for a float is inf and
        # fails its range check (NaN and infinities are also found in SQL below).
        psycopg2.extensions.register_type(psycopg2.extensions.new_type(
            psycopg2.extensions.DECIMAL.values, "GATE_NUMERIC", lambda v, _cur: None if v is None else float(v)), cur)
        cur.execute(f"SELECT {cols} FROM {table} WHERE batch_id = %s ORDER BY row_no", (batch_id,))
        while rows := cur.fetchmany(chunk_rows):
            frame = pd.DataFrame.from_records(rows, columns=["row_no", *columns])
            result.rows += len(frame)
            checked = row_run.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {},
                                  result_format=result_format)
            record_row_results(result, checked.results)
    for row_no, column in non_finite_rows(conn, table, batch_id, columns):
        name = f"expect_column_values_to_be_finite({column})"
        result.failures[name] = result.failures.get(name, 0) + 1
        result.bad_rows.setdefault(row_no, []).append(name)
    conn.commit()
    if docs_dir:
        result.docs_url = build_docs(conn, ctx, flow, batch_id, docs_dir)
    if unit_column:
        result.unit = unit_column
        result.units, result.bad_units = count_units(conn, table, batch_id, unit_column, list(result.bad_rows))
    share_applies = (result.units if unit_column else result.rows) >= result.min_rows_for_share
    result.may_load = not result.batch_failures and (result.failing_share <= threshold or not share_applies)
    result.seconds = round(time.monotonic() - started, 3)
    log.info("gate %s %s: %s rows, %s failing, %s", flow, batch_id, result.rows, len(result.bad_rows),
             "may load" if result.may_load else "blocked")
    return result
