"""Every DAG parses fast, without import errors or heavy imports at module top, and is documented."""

import ast
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
# what a DAG file may import at top level: parsing must stay fast and free of I/O
ALLOWED_TOP_IMPORTS = {"__future__", "pendulum", "datetime", "airflow.sdk", "bridge_alerts.notifier",
                       "bridge_flows.mirror_dag",
                       "bridge_flows.crm_events", "bridge_flows.rollout", "bridge_flows.defaults"}


@pytest.fixture(scope="module")
def dagbag():
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    bag.parse_seconds = time.monotonic() - started
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= len(DAG_FILES)


def test_every_dag_is_documented_owned_and_tagged(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 80, f"{dag_id} has no doc_md"
        assert all(t.owner not in (None, "", "airflow") for t in dag.tasks), f"{dag_id} has no owner"
        assert dag_id == Path(dag.fileloc).stem, "one file per pipeline, named after its DAG"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_have_no_heavy_top_level_imports(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert module in ALLOWED_TOP_IMPORTS, f"{path.name}: top-level import of {module}"


def test_every_task_retries_after_the_one_configured_delay(dagbag, monkeypatch):
    """One setting ([core] default_task_retry_delay) for every task, mapped ones included, also in the copy of the
    DAG the scheduler works from (serialized and read back): left implicit, a mapped task's delay could fall back to
    the scheduler's built-in 300 s."""
    import datetime as dt

    from airflow.serialization.serialized_objects import DagSerialization
    from bridge_flows.defaults import retry_delay

    wanted = retry_delay()
    assert wanted == dt.timedelta(seconds=int(os.environ.get("AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY", "300")))
    for dag_id, dag in dagbag.dags.items():
        scheduler_copy = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        for task in [*dag.tasks, *scheduler_copy.tasks]:
            assert task.retry_delay == wanted, f"{dag_id}.{task.task_id} retries after {task.retry_delay}"


def test_the_console_finds_the_dag_of_every_flow(dagbag):
    """The console (include/console/catalog.py) links a flow's records to the DAG that runs it."""
    from include.console.catalog import dag_of
    from include.flows import FLOWS

    for flow in [*FLOWS, "erp_file_exchange"]:
        dag = dagbag.dags.get(dag_of(flow))
        assert dag is not None, f"flow {flow}: no DAG {dag_of(flow)}"
        assert dag.dag_id == flow or any(t.task_id.startswith(f"{flow}.") for t in dag.tasks), (flow, dag.dag_id)
