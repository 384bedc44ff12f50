"""The event path of stage 2: crm_watch_renewal subscribes the CRM sandbox's watch API (through Airflow), the
sandbox POSTs real notifications to the real receiver (include.bridge.crm_events, an HTTP server), and the
event trigger that wakes crm_orders_to_erp claims them. A wrong token is refused and kept nowhere."""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

from include.sandbox.crm.process import free_port
from tests.conftest import ROOT, airflow_env_for, bridge_rows, run_dag

pytestmark = pytest.mark.slow
TOKEN = uuid.uuid4().hex
RECEIVER_LOG: list[str] = []


@pytest.fixture(scope="module")
def roles(bridge):
    """The bridge's app and receiver roles, named for this test session (roles are server-wide)."""
    import psycopg2

    from include.bridge import db

    suffix = uuid.uuid4().hex[:8]
    names = {"app": f"bridge_app_{suffix}", "receiver": f"bridge_receiver_{suffix}"}
    passwords = {name: uuid.uuid4().hex for name in names.values()}
    db.create_roles(bridge[1], names["app"], names["receiver"], passwords)
    yield {kind: (name, passwords[name]) for kind, name in names.items()}
    for name in names.values():
        with bridge[1].cursor() as cur:
            cur.execute(f'DROP OWNED BY "{name}"')
        bridge[1].commit()
    server = psycopg2.connect(dbname="postgres")
    server.autocommit = True
    with server.cursor() as cur:
        for name in names.values():
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
    server.close()


@pytest.fixture(scope="module")
def receiver(bridge, roles, tmp_path_factory):
    """The real receiver, as the receiver role (INSERT into bridge.crm_event, nothing else)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("receiver") / "receiver.log", "w")  # noqa: SIM115
    RECEIVER_LOG.append(log.name)
    user, password = roles["receiver"]
    dsn = f"dbname={bridge[0]} user={user} password={password} host={os.environ['PGHOST']} port={os.environ['PGPORT']}"
    proc = subprocess.Popen([sys.executable, "-m", "include.bridge.crm_events", "serve", "--port", str(port)],
                            env={**os.environ, "BRIDGE_DB_DSN": dsn,
                                 "CRM_NOTIFY_TOKEN": TOKEN}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def unclaimed(bridge) -> list[tuple]:
    with bridge[1].cursor() as cur:
        cur.execute("SELECT module, operation, record_ids FROM bridge.crm_event WHERE claimed_at IS NULL ORDER BY id")
        rows = cur.fetchall()
    bridge[1].commit()
    return rows


def first_event(trigger, timeout: float):
    async def first():
        async for event in trigger.run():
            return event.payload
    try:
        return asyncio.run(asyncio.wait_for(first(), timeout))
    except TimeoutError:
        return None


def test_a_confirmed_order_notifies_the_receiver_and_the_trigger_fires_once(crm, erp, bridge, receiver, tmp_path,
                                                                           monkeypatch):
    env = airflow_env_for(tmp_path / "airflow", erp, bridge, crm)
    assert run_dag(env, "crm_watch_renewal") == "success"  # no crm_notify_url: skipped, not failed
    env |= {"AIRFLOW_VAR_CRM_NOTIFY_URL": f"{receiver}/zoho/notifications",
            "AIRFLOW_CONN_CRM_NOTIFY": json.dumps({"conn_type": "generic", "password": TOKEN})}
    assert run_dag(env, "crm_watch_renewal") == "success"
    assert not unclaimed(bridge)

    client = crm.client()
    order = next(r for r in client.iter_records("Sales_Orders", ["Status"]) if r["Status"] != "Confirmed")
    client.update("Sales_Orders", [{"id": order["id"], "Status": "Confirmed"}])
    deadline = time.monotonic() + 15
    while not unclaimed(bridge):
        assert time.monotonic() < deadline, "no notification reached the receiver"
        time.sleep(0.2)
    assert unclaimed(bridge) == [("Sales_Orders", "edit", [order["id"]])]

    # someone else's notification (wrong token) is refused and not kept
    forged = requests.post(f"{receiver}/zoho/notifications", timeout=5, json={
        "module": "Sales_Orders", "operation": "edit", "ids": ["1"], "channel_id": "1", "token": "guess"})
    assert forged.status_code == 401 and len(unclaimed(bridge)) == 1

    from bridge_flows.crm_events import CrmChangeEventTrigger

    monkeypatch.setenv("AIRFLOW_CONN_BRIDGE_DB", env["AIRFLOW_CONN_BRIDGE_DB"])
    trigger = CrmChangeEventTrigger(bridge_conn_id="bridge_db", poll_seconds=0.2)
    assert trigger.serialize() == ("bridge_flows.crm_events.CrmChangeEventTrigger",
                                   {"bridge_conn_id": "bridge_db", "poll_seconds": 0.2})
    assert first_event(trigger, 20) == {"events": 1, "records": 1, "modules": ["Sales_Orders"], "echoes": 0}
    assert not unclaimed(bridge)
    assert first_event(CrmChangeEventTrigger(poll_seconds=0.2), 2) is None  # nothing new: it does not fire

    # the receiver's NOTIFY wakes the trigger: a minute's poll interval does not delay the event
    async def woken() -> tuple[dict, float]:
        events = CrmChangeEventTrigger(poll_seconds=60).run()
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(1.0)  # listening, past its first (empty) claim
        sent = time.monotonic()
        kept = await asyncio.to_thread(requests.post, f"{receiver}/zoho/notifications", json=GOOD | {"token": TOKEN},
                                       timeout=10)
        assert kept.ok, kept.text
        event = await asyncio.wait_for(first, 10)
        await events.aclose()
        return event.payload, time.monotonic() - sent
    payload, seconds = asyncio.run(woken())
    assert payload["events"] == 1 and seconds < 3, (payload, seconds)

    # the notification of the bridge's own write-back (noted before the write) is claimed and starts nothing
    from include.bridge import crm_events

    crm_events.expect_echoes(bridge[1], "Sales_Orders", [order["id"]])
    client.update("Sales_Orders", [{"id": order["id"], "Integration_Message": "SO-1: in the ERP"}])
    deadline = time.monotonic() + 15
    while not unclaimed(bridge):
        assert time.monotonic() < deadline, "no notification reached the receiver"
        time.sleep(0.2)
    assert first_event(CrmChangeEventTrigger(poll_seconds=0.2), 2) is None
    assert not unclaimed(bridge) and not bridge_rows(bridge, "SELECT * FROM bridge.crm_echo")
    client.update("Sales_Orders", [{"id": order["id"], "Integration_Message": "a person's edit"}])  # no note: real
    assert first_event(CrmChangeEventTrigger(poll_seconds=0.2), 20)["events"] == 1


GOOD = {"channel_id": "1000000068001", "module": "Sales_Orders", "operation": "edit", "ids": ["5843104000000777001"]}
MARK = "ATTACKER-TEXT-7f3"


@pytest.mark.parametrize("body, status", [
    (json.dumps(GOOD | {"token": "wrong"}), 401),
    (json.dumps(GOOD | {"token": "密码" + MARK}), 401),                          # non-ASCII token: was a 500
    ("[" * 20_000 + "]" * 20_000, 401),                                         # deep JSON: was a 500
    (json.dumps(GOOD | {"token": TOKEN, "pad": "x" * 200_000}), 413),           # over the body cap
    (json.dumps(GOOD | {"token": TOKEN, "channel_id": MARK}), 401),             # not our channel
    (json.dumps(GOOD | {"token": TOKEN, "module": "Accounts"}), 401),           # not a watched module
    (json.dumps(GOOD | {"token": TOKEN, "ids": [MARK]}), 401),                  # ids that are not record ids
    (json.dumps(GOOD | {"token": TOKEN, "operation": MARK}), 401),
])
def test_hostile_requests_are_refused_and_nothing_is_kept(receiver, bridge, body, status):
    before = unclaimed(bridge)
    answer = requests.post(f"{receiver}/zoho/notifications", data=body.encode(), timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert unclaimed(bridge) == before
    time.sleep(0.05)
    with open(RECEIVER_LOG[0]) as f:
        assert MARK not in f.read()  # what a stranger sent is never echoed into our logs


def test_a_good_notification_is_kept(receiver, bridge):
    before = len(unclaimed(bridge))
    answer = requests.post(f"{receiver}/zoho/notifications", json=GOOD | {"token": TOKEN}, timeout=10)
    assert answer.json() == {"status": "kept", "records": 1} and len(unclaimed(bridge)) == before + 1


def test_the_receiver_role_may_only_add_notifications_and_the_app_role_changes_no_table(bridge, roles):
    """Least privilege: what a stranger who broke into the receiver could do is add notifications; the flows' role
    reads and writes rows but installs no schema: a run against an old schema says what to run instead."""
    import psycopg2

    from include.bridge import db

    def connect(kind):
        user, password = roles[kind]
        return psycopg2.connect(dbname=bridge[0], user=user, password=password, host=os.environ["PGHOST"],
                                port=os.environ["PGPORT"])

    def refused(conn, sql):
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            return False
        except psycopg2.errors.InsufficientPrivilege:
            return True
        finally:
            conn.rollback()

    receiver = connect("receiver")
    with receiver.cursor() as cur:
        cur.execute("INSERT INTO bridge.crm_event (channel_id, module, operation, record_ids) "
                    "VALUES ('1', 'Sales_Orders', 'edit', ARRAY['1'])")
    receiver.rollback()
    for sql in ("SELECT * FROM bridge.crm_event", "SELECT * FROM bridge.order_outbox",
                "INSERT INTO bridge.crm_event (channel_id, module, record_ids, claimed_at) "
                "VALUES ('1', 'Sales_Orders', ARRAY['1'], now())", "DELETE FROM bridge.crm_event",
                "UPDATE bridge.run_ledger SET status = 'success'"):
        assert refused(receiver, sql), sql
    receiver.close()

    app = connect("app")
    with app.cursor() as cur:
        cur.execute("SELECT count(*) FROM bridge.run_ledger")
    app.rollback()
    assert refused(app, "ALTER TABLE bridge.run_ledger ADD COLUMN x int")
    assert refused(app, "CREATE TABLE bridge.mine (x int)")
    db.ensure_schema(app)  # current: one read, nothing to do
    with bridge[1].cursor() as cur:
        cur.execute("UPDATE bridge.schema_version SET version = 'old'")
    bridge[1].commit()
    try:
        with pytest.raises(db.SchemaNotCurrent, match="python -m include.bridge.db migrate"):
            db.ensure_schema(app)
    finally:
        db.install_schema(bridge[1])
        app.close()
    assert db.installed_version(bridge[1]) == db.schema_version()
