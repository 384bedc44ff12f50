"""The one contract every pipeline runs on: a Flow declares what it moves, a Run is one execution of it.

A flow declares its name, source and target, its pilot dimensions, its mapping (include/mappings/<name>.yaml) and
its suite (expectations/<name>.json), and implements only its business steps. What every run shares lives here,
once:
- open: the bridge schema, the rollout checked against the flow's pilot dimensions, the ledger row (a retry or a
  clear reopens the same batch), a retried dry run's preview cleared;
- step: a step's seconds and row counts into the ledger;
- refuse: a gate that blocks the batch closes the ledger row, sends one alert and raises GateBlocked;
- close: the ledger's final status, or for a dry run what it would have written.
A Run crosses task boundaries as a small XCom dict (`to_xcom` / `from_xcom`: ids, window, rollout, counts, gate
outcome). Its writer is chosen once from the rollout: the live writer quarantines, writes the CRM (audited) and
sends ERP documents; the preview writer puts all of that in bridge.dry_run_preview. Flows write through it and
never test for a dry run themselves. Rows that cross module lines are named tuples, not positional ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, NamedTuple

from include.bridge import engine, rollout
from include.bridge.alerts import Alert
from include.bridge.gate import GateResult

log = logging.getLogger(__name__)


class GateBlocked(Exception):
    """The gate refused the batch; operators were alerted (task-failure alerts skip it: alert_sent)."""

    alert_sent = True


class QuarantineRow(NamedTuple):
    """A bad record: its business key, what it was (replayed when fixed), and why it was stopped."""
    key: str
    payload: dict
    reasons: list[str]


class PreviewRow(NamedTuple):
    """What a dry run would have written (bridge.dry_run_preview)."""
    target_system: str        # crm, erp, quarantine
    entity: str
    business_key: str
    record_id: str | None     # CRM "<Module>:<id>" or the ERP document's idempotency key
    action: str               # update, create, cancel, amend, quarantine, ...
    before: dict | None
    after: dict | None


# ---------------------------------------------------------------------------------------------- writers
class Writer:
    """Where a run's writes go: the live systems, or the dry run's preview. Chosen once, from the rollout."""
    live: ClassVar[bool]

    def __init__(self, bridge, run: Run):
        self.bridge, self.run = bridge, run

    def preview(self, rows: list[PreviewRow]) -> int:
        return rollout.preview(self.bridge, self.run.flow, self.run.batch_id, self.run.run_id, rows)


class LiveWriter(Writer):
    live = True

    def quarantine(self, entity: str, rows: list[QuarantineRow]) -> int:
        """Bad records into bridge.quarantine (an open entry of the same key is refreshed); the caller commits."""
        return engine.quarantine(self.bridge, self.run.flow, self.run.batch_id, [tuple(r) for r in rows])

    def update_crm(self, crm, entity: str, module: str, records: list[dict]) -> list:
        """CRM updates by record id, audited with their before-images; the per-record outcomes."""
        return engine.audited_update(self.bridge, crm, self.run.flow, entity, module, records, self.run.run_id,
                                     self.run.batch_id) if records else []

    def send_erp(self, send: Callable[[], int], documents: Callable[[], Iterable[PreviewRow]]) -> int:
        """ERP documents: `send()` sends them (outbox, inbound tables, audit) and says how many went; `documents()`
        would list them (what a dry run previews), so a live run never builds that list."""
        return send()


class PreviewWriter(Writer):
    live = False

    def quarantine(self, entity: str, rows: list[QuarantineRow]) -> int:
        """A dry run changes no quarantine: the next live run finds the same records and decides the same."""
        return self.preview([PreviewRow("quarantine", entity, r.key, None, "quarantine", None,
                                        {"reasons": r.reasons}) for r in rows])

    def update_crm(self, crm, entity: str, module: str, records: list[dict]) -> list:
        self.preview([PreviewRow("crm", entity, r["id"], f"{module}:{r['id']}", "update", None, r) for r in records])
        return []

    def send_erp(self, send: Callable[[], int], documents: Callable[[], Iterable[PreviewRow]]) -> int:
        """Nothing is sent; the documents are previewed (a page at a time: a large batch never sits in memory)."""
        page: list[PreviewRow] = []
        for row in documents():
            page.append(row)
            if len(page) == 1000:
                self.preview(page)
                page = []
        self.preview(page)
        return 0


# ------------------------------------------------------------------------------------------------- run
@dataclass
class Run:
    """One execution of a flow; what passes between its tasks (to_xcom: small, no records, no secrets)."""
    flow: str
    run_id: str
    batch_id: str
    rollout: rollout.Rollout
    since: str | None = None
    until: str | None = None
    backfill: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    gate: str | None = None   # None (not gated yet), passed, blocked
    facts: dict[str, Any] = field(default_factory=dict)   # a flow's own small values (never records, never secrets)

    def writer(self, bridge) -> Writer:
        return (PreviewWriter if self.rollout.dry_run else LiveWriter)(bridge, self)

    def to_xcom(self) -> dict:
        return asdict(self) | {"rollout": self.rollout.as_dict()}

    @classmethod
    def from_xcom(cls, data: dict) -> Run:
        return cls(**(data | {"rollout": rollout.Rollout(**data["rollout"])}))


# ------------------------------------------------------------------------------------------------ flow
class Flow:
    """Subclasses declare the class attributes and implement their business steps with the helpers below."""
    name: ClassVar[str]
    source: ClassVar[str]                         # crm or erp: the system of record of what this flow moves
    target: ClassVar[str]
    pilot_dimensions: ClassVar[tuple[str, ...]] = ("regions", "customers", "skus")
    pilot_hint: ClassVar[str] = ""                # what a person should pilot this flow with instead
    not_reversible: ClassVar[str] = ""            # why its ERP documents cannot be undone (rollback lists them)

    @property
    def suites(self) -> dict[str, list[str]]:
        """Suite name (expectations/<name>.json) -> the staged columns its gate sees, besides row_no; {} for a flow
        that loads nothing and so has no gate."""
        raise NotImplementedError(f"{type(self).__name__} declares no suites")

    def crm_fields(self) -> list:
        """What this flow needs of the CRM's fields (include/bridge/doctor.py FieldNeed): the preflight and
        `python -m include.bridge.doctor` check them against the org. [] for a flow that touches no CRM field."""
        return []

    def reverse_erp(self, bridge, erp_write, batch_id: str, run_id: str, changes: list[dict]) -> list:
        """How bridge_rollback undoes this flow's ERP documents of one run (include/bridge/rollback.py); by default
        they cannot be undone through the inbound contract and are listed for the ERP team with `not_reversible`."""
        from include.bridge.rollback import irreversible

        return irreversible(changes, self.not_reversible
                            or f"{self.name} has no reversal through the ERP inbound contract")

    def open(self, systems, run_id: str, plan: rollout.Rollout | None = None, backfill: bool = False) -> Run:
        """Install or complete the bridge schema, check the rollout, open (or reopen) the ledger row."""
        from include.bridge import db

        plan = plan or rollout.Rollout(self.name)
        unusable = [d for d in ("regions", "customers", "skus") if getattr(plan, d) and d not in self.pilot_dimensions]
        if unusable:
            raise rollout.PilotNotApplicable(f"{self.name} cannot be piloted by {', '.join(unusable)}"
                                             + (f": {self.pilot_hint}" if self.pilot_hint else ""))
        bridge = systems.bridge()
        db.ensure_schema(bridge)  # one read when current; runs started together never race on DDL
        batch_id = engine.start_run(bridge, self.name, run_id, mode=plan.mode, backfill=backfill)
        rollout.clear_preview(bridge, batch_id)
        return Run(self.name, run_id, batch_id, plan, backfill=backfill)

    def covers(self, systems, run: Run, since, until) -> None:
        """The interval the run reads (changes after `since` up to `until`), kept on the run and in its ledger row:
        what a backfill covered can be checked afterwards."""
        run.since = since.isoformat() if since is not None else None
        run.until = until.isoformat() if until is not None else None
        engine.record_interval(systems.bridge(), run.batch_id, since, until)

    @contextmanager
    def step(self, systems, run: Run, name: str) -> Iterator[dict[str, int]]:
        """Time a step; the ledger counts it sets (rows_extracted, rows_passed, rows_loaded, rows_quarantined,
        rows_failed) are recorded with its seconds and kept in run.counts."""
        started, counts, failed, credits = time.monotonic(), {}, True, systems.crm_credits()
        try:
            yield counts
            failed = False
        finally:  # a failed step is recorded too (a refused gate's counts), unless recording fails as well
            try:
                engine.record_step(systems.bridge(), run.batch_id, name, time.monotonic() - started,
                                   systems.crm_credits() - credits, **counts)
            except Exception as exc:
                if not failed:
                    raise
                # the step's own error propagates; this one is secondary (often the same lost connection)
                log.warning("%s: step %s of batch %s failed and could not be recorded either: %s: %s", self.name,
                            name, run.batch_id, type(exc).__name__, exc)
            run.counts |= counts

    def gate(self, systems, run: Run, *, table: str, columns: list[str], parameters: dict, title: str,
             send_alert: Callable[[Alert], Any] | None = None, unit_column: str | None = None) -> GateResult:
        """The flow's suite on the staged batch (GX Data Docs kept); a batch that may not load is refused.
        `unit_column`: what the flow quarantines, when that is more than one staged row (an order's lines)."""
        from include.bridge.gate import run_gate
        from include.bridge.mirror import data_docs_dir

        result = run_gate(systems.bridge(), systems.bridge_url(), flow=self.name, table=table,
                          batch_id=run.batch_id, columns=columns, parameters=parameters,
                          docs_dir=data_docs_dir(self.name), unit_column=unit_column)
        if not result.may_load:
            self.refuse(systems, run, result, send_alert, title.format(rows=result.rows))
        run.gate = "passed"
        return result

    def refuse(self, systems, run: Run, result: GateResult, send_alert: Callable[[Alert], Any] | None,
               title: str, event_key: str = "gate") -> None:
        """The gate blocked the whole batch: the ledger says why, one alert goes out, the task fails."""
        message = "; ".join(result.summary()) + (f" (Data Docs: {result.docs_url})" if result.docs_url else "")
        run.gate = "blocked"
        engine.finish_run(systems.bridge(), run.batch_id, "gate_failed", message)
        if send_alert:
            send_alert(Alert(kind="gate_failure", flow=self.name, run_id=run.run_id, event_key=event_key, title=title,
                             lines=result.summary(), link=result.docs_url, link_label="Data Docs"))
        raise GateBlocked(f"gate refused batch {run.batch_id}: {message}")

    def close(self, systems, run: Run, status: str, message: str) -> dict:
        """The ledger row's final status; a dry run's says what it would have written instead."""
        if run.rollout.dry_run:
            return rollout.finish_dry_run(systems.bridge(), run.batch_id)
        return engine.finish_run(systems.bridge(), run.batch_id, status, message)
