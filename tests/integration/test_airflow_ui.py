"""The Airflow UI as operators see it: `airflow standalone` (the documented `make ui`) on the embedded default, in
Airflow's multi-team mode so that one person may see a DAG another may not, driven by headless Chromium through
Playwright. It logs in, finds the DAGs of every stage with their tags, a successful run and the assets; then the
integration console (plugins/bridge_console): a bad order's quarantine entry with its reason, fixed in the CRM and
replayed until it loads, another dismissed with a comment, both in the console's audit — and a user of another team
gets 403 from the console's API. Screenshots of every page under $LOCAL_DIR/screenshots."""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
import requests

from include.bridge import db as bridge_db
from include.sandbox.crm.process import free_port
from tests.conftest import ROOT, airflow_env_for, bridge_rows, run_dag

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ORDERS = "crm_orders_to_erp"
TEAM, OTHER_TEAM = "integration", "planning"
USERS = f"admin:admin,operator:user:{TEAM},outsider:user:{OTHER_TEAM}"
SHOTS = os.path.join(os.environ.get("LOCAL_DIR", os.path.join(ROOT, ".local")), "screenshots")


@pytest.fixture(scope="module")
def chromium():
    done = subprocess.run([os.path.join(ROOT, "scripts", "ensure_chromium.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def console_role(bridge):
    """The console's own role on the test bridge DB (a name of this test's, the grants of bridge_console)."""
    suffix = secrets.token_hex(3)
    names = {"app": f"bridge_app_{suffix}", "receiver": f"bridge_receiver_{suffix}",
             "console": f"bridge_console_{suffix}"}
    passwords = {name: secrets.token_urlsafe(12) for name in names.values()}
    bridge_db.create_roles(bridge[1], names["app"], names["receiver"], passwords, console_role=names["console"])
    return names["console"], passwords[names["console"]]


def seed_orders(client, bridge) -> dict[str, str]:
    """Confirmed CRM orders: two bad ones (what the console shows) among good ones (the gate's share stays low)."""
    products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
    account = bridge_rows(bridge, "SELECT crm_id FROM bridge.id_map WHERE entity = 'customer' ORDER BY erp_key "
                                  "LIMIT 1")[0][0]
    sku = sorted(k for k in products if k.startswith("SNS-"))[0]

    def order(subject, qty=2, **header):
        line = {"Product_Name": {"id": products[sku]}, "Quantity": qty, "List_Price": 100.0, "Sequence_Number": 1,
                "Line_Tax": [{"name": "VAT", "percentage": 13}]}
        record = {"Subject": subject, "Status": "Confirmed", "Account_Name": {"id": account}, "Currency": "CNY",
                  "Ordered_Items": [line], "Is_Prepaid": True}
        return client.insert("Sales_Orders", [record | header])[0].id

    seeded = {"no_currency": order("华东经销商补货订单（缺币种）", Currency=None),
              "zero_qty": order("样品订单（数量为零）", qty=0)}
    for n in range(6):
        order(f"常规补货订单 #{n}")
    return seeded


@pytest.fixture(scope="module")
def ui(tmp_path_factory, erp, bridge, crm_demo, console_role):
    """airflow standalone on its own AIRFLOW_HOME (SQLite, LocalExecutor, multi-team: the DAG folder is team
    `integration`'s bundle), after stage-1 runs and an orders run that quarantined the two bad orders."""
    home = tmp_path_factory.mktemp("airflow_ui")
    port = free_port()
    bundle = [{"name": "bridge", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
               "kwargs": {"path": os.path.join(ROOT, "dags")}, "team_name": TEAM}]
    role, password = console_role
    env = airflow_env_for(
        home, erp, bridge, crm_demo, AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__MULTI_TEAM="True", AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=USERS,
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(bundle),
        AIRFLOW_CONN_BRIDGE_CONSOLE_DB=f"postgresql://{role}:{password}@{os.environ['PGHOST']}:"
                                       f"{os.environ['PGPORT']}/{bridge[0]}",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    for team in (TEAM, OTHER_TEAM):
        subprocess.run([airflow, "teams", "create", team], env=env, check=True, capture_output=True, timeout=120)
    for dag_id in ("master_data_match", "erp_credit_to_crm", "erp_stock_to_crm"):
        assert run_dag(env, dag_id) == "success", dag_id
    seeded = seed_orders(crm_demo.client(), bridge)
    assert run_dag(env, ORDERS, wait_for_erp_seconds=0) == "success"
    assert run_dag(env, "erp_prices_to_crm", dry_run=True) == "success"  # what the console previews
    assert run_dag(env, "reconcile_crm_erp") == "success"  # prices not in the CRM yet: differences to show
    with open(home / "standalone.log", "w") as out:
        proc = subprocess.Popen([airflow, "standalone"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
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
    passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    yield {"url": url, "passwords": passwords, "home": home, "seeded": seeded, "env": env}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def token(ui, user: str) -> str:
    resp = requests.post(f"{ui['url']}/auth/token", json={"username": user, "password": ui["passwords"][user]},
                         timeout=30)
    resp.raise_for_status()
    return resp.json()["access_token"]


@contextlib.contextmanager
def browser_page(ui, chromium, user: str = "admin"):
    from playwright.sync_api import sync_playwright

    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(f"{ui['url']}/")
        page.wait_for_url("**/auth/login**")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", ui["passwords"][user])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    path = os.path.join(SHOTS, name)
    page.screenshot(path=path, full_page=True)
    assert os.path.getsize(path) > 20_000, name


def test_the_ui_shows_every_stage_its_runs_and_the_assets(ui, chromium):
    with browser_page(ui, chromium) as page:
        page.goto(f"{ui['url']}/dags?sort=dag_display_name&limit=50")
        page.wait_for_selector("text=erp_stock_to_crm", timeout=60_000)
        for dag_id in ("master_data_match", "crm_orders_to_erp", "crm_forecast_to_erp", "erp_production_to_crm",
                       "reconcile_crm_erp"):
            page.wait_for_selector(f"text={dag_id}", timeout=30_000)
        for tag in ("stage-1", "stage-2", "stage-3", "operations"):
            assert page.locator(f"text={tag}").count() > 0, tag
        shot(page, "dag_list.png")

        page.goto(f"{ui['url']}/dags/master_data_match/runs")
        page.wait_for_selector("text=success", timeout=60_000)
        shot(page, "master_data_match_runs.png")

        page.goto(f"{ui['url']}/dags/erp_stock_to_crm")
        page.click("button[aria-label='Dag Docs']")  # the DAG's doc_md: what the flow moves and from where
        page.wait_for_selector("text=ERP stock → CRM Products", timeout=30_000)
        page.screenshot(path=os.path.join(SHOTS, "erp_stock_to_crm_docs.png"))

        page.goto(f"{ui['url']}/assets")
        page.wait_for_selector("text=bridge://crm_orders_to_erp", timeout=30_000)
        shot(page, "assets.png")


def entry_status(bridge, crm_id: str) -> str:
    return bridge_rows(bridge, "SELECT status FROM bridge.quarantine WHERE flow = %s AND business_key = %s "
                               "ORDER BY id DESC LIMIT 1", (ORDERS, crm_id))[0][0]


def test_the_console_replays_a_fixed_order_dismisses_another_and_audits_both(ui, chromium, bridge, crm_demo):
    fixed, dismissed = ui["seeded"]["no_currency"], ui["seeded"]["zero_qty"]
    assert entry_status(bridge, fixed) == entry_status(bridge, dismissed) == "open"
    admin = {"Authorization": f"Bearer {token(ui, 'admin')}"}
    requests.patch(f"{ui['url']}/api/v2/dags/{ORDERS}", json={"is_paused": False}, headers=admin,
                   timeout=30).raise_for_status()
    with browser_page(ui, chromium) as page:
        page.goto(f"{ui['url']}/plugin/integration-console")  # the console in Airflow's own navigation
        console = page.frame_locator("iframe")
        console.locator("text=Integration overview").wait_for(timeout=60_000)
        console.locator(f"td >> text={ORDERS}").first.wait_for()
        shot(page, "console_overview.png")

        console.locator("nav >> text=Quarantine").click()
        row = console.locator(f"tr[data-key='{fixed}']")
        row.wait_for(timeout=30_000)
        assert "currency is missing" in row.inner_text()
        assert "华东经销商补货订单（缺币种）" in row.inner_text()  # what it was, in the salesperson's words
        shot(page, "console_quarantine.png")

        crm_demo.client().update("Sales_Orders", [{"id": fixed, "Currency": "CNY"}])  # fixed at the source
        console.locator(f"input[aria-label='select {fixed}']").check()
        console.locator("#replay").click()
        console.locator("#result >> text=replay started").wait_for(timeout=30_000)
        deadline = time.monotonic() + 240
        while entry_status(bridge, fixed) != "replayed":
            assert time.monotonic() < deadline, "the replayed order did not load"
            time.sleep(3)
        sent = bridge_rows(bridge, "SELECT count(*) FROM bridge.order_outbox WHERE crm_id = %s AND action = 'CREATE' "
                                   "AND sent_at IS NOT NULL", (fixed,))[0][0]
        assert sent == 1

        page.reload()
        console = page.frame_locator("iframe")
        console.locator(f"tr[data-key='{dismissed}']").wait_for(timeout=30_000)
        assert console.locator(f"tr[data-key='{fixed}']").count() == 0  # replayed: no longer open
        console.locator(f"input[aria-label='select {dismissed}']").check()
        console.locator("#comment").fill("样品单，销售已电话确认取消 — not to be loaded")
        console.locator("#dismiss").click()
        console.locator("#result >> text=1 entries dismissed").wait_for(timeout=30_000)
        assert entry_status(bridge, dismissed) == "dismissed"

        console.locator("nav >> text=Actions").click()
        console.locator("text=样品单，销售已电话确认取消").wait_for(timeout=30_000)
        audit = console.locator("table").inner_text()
        assert "replay" in audit and "dismiss" in audit and "admin" in audit
        shot(page, "console_actions.png")

        run_id = bridge_rows(bridge, "SELECT dag_run_id FROM bridge.console_action WHERE action = 'replay'")[0][0]
        page.goto(f"{ui['url']}/dags/{ORDERS}/runs/{run_id}/plugin/integration-run")  # the DAG run's tab
        run_view = page.frame_locator("iframe")
        run_view.locator(f"text=what run {run_id} did").wait_for(timeout=60_000)
        run_view.locator(f"text={fixed}").first.wait_for()
        shot(page, "console_run.png")

        page.goto(f"{ui['url']}/bridge-console/previews")
        page.wait_for_selector("text=erp_prices_to_crm")
        assert page.locator("td >> text=would be").count() == 0 and page.locator("tr").count() > 10
        shot(page, "console_previews.png")
        page.goto(f"{ui['url']}/bridge-console/reconciliation")
        page.wait_for_selector("text=differences on")
        cells = page.locator("table").last.inner_text()
        assert "prices" in cells and '{"' not in cells  # values a person reads, not JSON
        shot(page, "console_reconciliation.png")
    rows = bridge_rows(bridge, "SELECT action, actor, business_keys, comment, dag_run_id FROM bridge.console_action "
                               "ORDER BY id")
    assert [(r[0], r[1], r[2]) for r in rows] == [("replay", "admin", [fixed]), ("dismiss", "admin", [dismissed])]
    assert rows[1][3].startswith("样品单") and rows[0][4]


def test_a_user_of_another_team_gets_403_from_the_console_api(ui, bridge):
    outsider = {"Authorization": f"Bearer {token(ui, 'outsider')}"}
    base = f"{ui['url']}/bridge-console"
    run_id = bridge_rows(bridge, "SELECT airflow_run_id FROM bridge.run_ledger WHERE flow = %s LIMIT 1",
                         (ORDERS,))[0][0]
    for path in (f"/api/quarantine?flow={ORDERS}", f"/api/runs/{ORDERS}/{run_id}", f"/runs/{ORDERS}/{run_id}",
                 "/api/reconciliation", f"/docs/{ORDERS}/index.html"):
        assert requests.get(base + path, headers=outsider, timeout=30).status_code == 403, path
    entry = bridge_rows(bridge, "SELECT id FROM bridge.quarantine WHERE flow = %s LIMIT 1", (ORDERS,))[0][0]
    for action in ("replay", "dismiss"):
        resp = requests.post(f"{base}/api/quarantine/{action}", json={"ids": [entry], "comment": "not mine"},
                             headers=outsider, timeout=30)
        assert resp.status_code == 403, (action, resp.text)
    assert requests.get(f"{base}/api/overview", headers=outsider, timeout=30).json()["flows"] == []
    assert requests.get(f"{base}/api/overview", timeout=30).status_code == 401  # no token: Airflow's own refusal
    operator = {"Authorization": f"Bearer {token(ui, 'operator')}"}  # the integration team sees its flows
    flows = {f["flow"] for f in requests.get(f"{base}/api/overview", headers=operator, timeout=30).json()["flows"]}
    assert ORDERS in flows


def test_the_console_role_reads_everything_and_writes_only_resolutions_and_its_audit(bridge, console_role):
    import psycopg2

    role, password = console_role
    conn = psycopg2.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"], user=role, password=password,
                            dbname=bridge[0])
    try:
        with conn.cursor() as cur:
            for table in ("run_ledger", "quarantine", "audit_log", "dry_run_preview", "reconciliation_run",
                          "console_action"):
                cur.execute(f"SELECT count(*) FROM bridge.{table}")
        conn.rollback()
        for statement in ("INSERT INTO bridge.audit_log (flow, target_system, entity, business_key) "
                          "VALUES ('x', 'crm', 'x', 'x')", "UPDATE bridge.quarantine SET payload = '{}'",
                          "DELETE FROM bridge.quarantine", "UPDATE bridge.run_ledger SET status = 'success'",
                          "UPDATE bridge.console_action SET comment = 'rewritten'", "CREATE TABLE bridge.x (a int)"):
            with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            conn.rollback()
    finally:
        conn.close()
