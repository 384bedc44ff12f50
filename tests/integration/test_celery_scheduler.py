"""The docker-compose setup without containers: Airflow with the CeleryExecutor against the machine's PostgreSQL
(metadata DB) and Redis (broker), as real processes — api-server, scheduler, dag-processor and two Celery workers.
The stage-1 DAGs run to success through the scheduler, both workers take tasks, and a backfill created with
`airflow backfill create` runs through the scheduler too."""

import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import psycopg2
import pytest
import requests

from include.sandbox.crm.process import free_port
from tests.conftest import ROOT, airflow_env_for, bridge_rows, drop_database, new_database

pytestmark = pytest.mark.slow
STAGE_1 = ["erp_stock_to_crm", "erp_credit_to_crm", "erp_prices_to_crm", "erp_history_to_crm"]
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """The machine's Redis if one answers (REDIS_HOST/REDIS_PORT, default 127.0.0.1:6379), else a private one."""
    host, port = os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT", "6379"))
    if answers(host, port):
        yield f"redis://{host}:{port}/{7}"
        return
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not answers("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def metadata_db():
    name = new_database("airflow_celery")
    yield name
    drop_database(name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, erp, bridge, crm_demo, redis_url, metadata_db):
    """api-server, scheduler, dag-processor and two Celery workers, each its own process (group)."""
    home = tmp_path_factory.mktemp("airflow_celery")
    port = free_port()
    user, host, pg_port = os.environ["PGUSER"], os.environ["PGHOST"], os.environ["PGPORT"]
    env = airflow_env_for(
        home, erp, bridge, crm_demo,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{user}@{host}:{pg_port}/{metadata_db}",
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=redis_url,
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql://{user}@{host}:{pg_port}/{metadata_db}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__CORE__PARALLELISM="8", AIRFLOW__LOGGING__LOGGING_LEVEL="INFO")
    commands = {"api-server": ["api-server", "--port", str(port)], "scheduler": ["scheduler"],
                "dag-processor": ["dag-processor"],
                "worker1": ["celery", "worker", "-H", "worker1@%h", "--concurrency", "2", "--skip-serve-logs"],
                "worker2": ["celery", "worker", "-H", "worker2@%h", "--concurrency", "2", "--skip-serve-logs"]}
    procs = {}
    for name, args in commands.items():
        with open(home / f"{name}.log", "w") as out:
            procs[name] = subprocess.Popen([AIRFLOW, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        dead = [n for n, p in procs.items() if p.poll() is not None]
        assert not dead, f"{dead} exited: " + (home / f"{dead[0]}.log").read_text()[-3000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the api-server did not answer"
        time.sleep(1)
    yield {"env": env, "home": home, "db": metadata_db, "procs": procs, "bridge": bridge}
    for p in procs.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(30)
        with contextlib.suppress(ProcessLookupError):  # children that outlive their parent (uvicorn workers)
            os.killpg(p.pid, signal.SIGKILL)


def meta(stack, sql: str, params=None) -> list[tuple]:
    with psycopg2.connect(dbname=stack["db"]) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def airflow(stack, *args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], env=stack["env"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def wait_for_runs(stack, dag_ids: list[str], run_type: str, count: int = 1, timeout: float = 420) -> list[tuple]:
    """Until every DAG has `count` finished runs of the type; returns (dag_id, run_id, state) of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = meta(stack, "SELECT dag_id, run_id, state FROM dag_run WHERE dag_id = ANY (%s) AND run_type = %s",
                    (dag_ids, run_type))
        done = [r for r in rows if r[2] in ("success", "failed")]
        if len(done) >= count * len(dag_ids) and len(done) == len(rows):
            return done
        assert time.monotonic() < deadline, f"runs not finished: {rows}\n" + \
            (stack["home"] / "scheduler.log").read_text()[-3000:]
        time.sleep(2)


def test_stage_1_runs_through_the_scheduler_on_two_celery_workers(stack):
    deadline = time.monotonic() + 180
    wanted = ["master_data_match", *STAGE_1]
    while {d for (d,) in meta(stack, "SELECT dag_id FROM dag WHERE dag_id = ANY (%s)", (wanted,))} != set(wanted):
        assert time.monotonic() < deadline, (stack["home"] / "dag-processor.log").read_text()[-3000:]
        time.sleep(2)
    for dag_id in wanted:  # triggered runs of a paused DAG wait; unpaused ones run through the scheduler
        airflow(stack, "dags", "unpause", dag_id)
    airflow(stack, "dags", "trigger", "master_data_match")
    assert {s for *_, s in wait_for_runs(stack, ["master_data_match"], "manual")} == {"success"}
    for dag_id in STAGE_1:
        airflow(stack, "dags", "trigger", dag_id)
    runs = wait_for_runs(stack, STAGE_1, "manual")
    assert {s for *_, s in runs} == {"success"}, runs
    # Only the manual runs' tasks: unpausing also lets the scheduler start each DAG's latest scheduled run,
    # which may still be going (CI failed on its 'running' tasks).
    tasks = meta(stack, "SELECT dag_id, task_id, state FROM task_instance WHERE (dag_id, run_id) IN "
                        "(SELECT dag_id, run_id FROM dag_run WHERE dag_id = ANY (%s) AND run_type = 'manual')",
                 (STAGE_1,))
    assert tasks and {s for *_, s in tasks} <= {"success", "skipped"}, tasks
    logs = {w: (stack["home"] / f"{w}.log").read_text() for w in ("worker1", "worker2")}
    taken = {w: text.count("execute_workload") for w, text in logs.items()}
    assert all(n > 0 for n in taken.values()), taken  # both workers took tasks


def test_a_backfill_created_from_the_cli_runs_through_the_scheduler(stack):
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - dt.timedelta(hours=3), now - dt.timedelta(hours=2)
    out = airflow(stack, "backfill", "create", "--dag-id", "erp_credit_to_crm", "--from-date", start.isoformat(),
                  "--to-date", end.isoformat(), "--reprocess-behavior", "none")
    assert "erp_credit_to_crm" in out
    airflow(stack, "dags", "trigger", "erp_credit_to_crm")  # a normal run beside the backfill
    runs = wait_for_runs(stack, ["erp_credit_to_crm"], "backfill", count=2)
    assert runs and {s for *_, s in runs} == {"success"}, runs
    wait_for_runs(stack, ["erp_credit_to_crm"], "manual", count=2)
    # each backfill run read its whole schedule slot (the cron's runs have zero-width data intervals): from the
    # previous tick, minus the lookback, to its own tick; together they cover the range without a gap
    lookback = dt.timedelta(minutes=10)
    covered = sorted(bridge_rows(stack["bridge"], """
        SELECT l.interval_start, l.interval_end FROM bridge.run_ledger l
        WHERE l.flow = 'erp_credit_to_crm' AND l.backfill AND l.airflow_run_id = ANY (%s)""", ([r[1] for r in runs],)))
    assert len(covered) == len(runs) >= 2
    for (_, end_1), (start_2, end_2) in zip(covered, covered[1:], strict=False):
        assert start_2 + lookback == end_1 and end_2 - end_1 == dt.timedelta(minutes=30), covered
    assert covered[0][1] - covered[0][0] == dt.timedelta(minutes=30) + lookback
    assert bridge_rows(stack["bridge"], "SELECT flow, airflow_run_id FROM bridge.run_ledger "
                                        "WHERE status = 'running'") == []
