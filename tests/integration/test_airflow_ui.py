"""The Airflow UI as operators see it: `airflow standalone` (the documented `make ui`) on the embedded default,
driven by headless Chromium through Playwright — it logs in, finds the DAGs of every stage with their tags, a
successful run, and saves screenshots (DAG list with runs, a run list, the assets linking the stages)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from include.sandbox.crm.process import free_port
from tests.conftest import ROOT, airflow_env_for, run_dag

pytestmark = pytest.mark.slow
RAN = ["master_data_match", "erp_stock_to_crm", "erp_credit_to_crm"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    done = subprocess.run([os.path.join(ROOT, "scripts", "ensure_chromium.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, erp, bridge, crm_demo):
    """airflow standalone on its own AIRFLOW_HOME (SQLite, LocalExecutor), after three stage-1 runs through Airflow."""
    home = tmp_path_factory.mktemp("airflow_ui")
    port = free_port()
    env = airflow_env_for(home, erp, bridge, crm_demo, AIRFLOW__API__PORT=str(port),
                          AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
                          PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for dag_id in RAN:
        assert run_dag(env, dag_id) == "success", dag_id
    with open(home / "standalone.log", "w") as out:
        proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "airflow"), "standalone"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (home / "standalone.log").read_text()[-3000:]
        try:
            health = requests.get(f"{url}/api/v2/monitor/health", timeout=2).json()
            if health["dag_processor"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy":
                break
        except (requests.RequestException, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, "airflow standalone did not come up"
        time.sleep(1)
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    yield {"url": url, "password": password, "home": home}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def test_the_ui_shows_every_stage_its_runs_and_the_assets(ui, chromium):
    from playwright.sync_api import sync_playwright

    shots = os.path.join(os.environ.get("LOCAL_DIR", os.path.join(ROOT, ".local")), "screenshots")
    os.makedirs(shots, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(f"{ui['url']}/")
        page.wait_for_url("**/auth/login**")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ui["password"])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)

        page.goto(f"{ui['url']}/dags?sort=dag_display_name&limit=50")
        page.wait_for_selector("text=erp_stock_to_crm", timeout=60_000)
        for dag_id in ("master_data_match", "crm_orders_to_erp", "crm_forecast_to_erp", "erp_production_to_crm",
                       "reconcile_crm_erp"):
            page.wait_for_selector(f"text={dag_id}", timeout=30_000)
        for tag in ("stage-1", "stage-2", "stage-3", "operations"):
            assert page.locator(f"text={tag}").count() > 0, tag
        page.screenshot(path=os.path.join(shots, "dag_list.png"), full_page=True)

        page.goto(f"{ui['url']}/dags/master_data_match/runs")
        page.wait_for_selector("text=success", timeout=60_000)
        page.screenshot(path=os.path.join(shots, "master_data_match_runs.png"), full_page=True)

        page.goto(f"{ui['url']}/dags/erp_stock_to_crm")
        page.click("button[aria-label='Dag Docs']")  # the DAG's doc_md: what the flow moves and from where
        page.wait_for_selector("text=ERP stock → CRM Products", timeout=30_000)
        page.screenshot(path=os.path.join(shots, "erp_stock_to_crm_docs.png"))

        page.goto(f"{ui['url']}/assets")
        page.wait_for_selector("text=bridge://crm_orders_to_erp", timeout=30_000)
        page.screenshot(path=os.path.join(shots, "assets.png"), full_page=True)
        browser.close()
    for name in ("dag_list.png", "master_data_match_runs.png", "assets.png"):
        assert os.path.getsize(os.path.join(shots, name)) > 20_000, name
