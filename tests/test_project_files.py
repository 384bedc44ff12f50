"""Project files a user relies on: docker-compose.yaml, README's promises, the lock."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_docker_compose_parses_and_names_every_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name in ("postgres", "redis", "erp-db", "mailpit", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-init", "erp-sandbox-init",
                 "crm-sandbox", "crm-events"):
        assert name in services, name
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for conn in ("AIRFLOW_CONN_ERP_READ", "AIRFLOW_CONN_ERP_WRITE", "AIRFLOW_CONN_BRIDGE_DB",
                 "AIRFLOW_CONN_SMTP_DEFAULT", "AIRFLOW_CONN_ZOHO_CRM", "AIRFLOW_CONN_CRM_NOTIFY",
                 "AIRFLOW_VAR_CRM_NOTIFY_URL", "AIRFLOW_VAR_BRIDGE_ALERT_EMAIL", "AIRFLOW_VAR_CRM_OWNER_IM_IDS",
                 "AIRFLOW_VAR_BRIDGE_ROLLOUT", "BRIDGE_REPORTS_DIR", "AIRFLOW__API_AUTH__JWT_SECRET",
                 "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert conn in env, conn
    assert services["airflow-worker"]["deploy"]["replicas"] >= 2  # worker(s): Celery spreads tasks over them
    assert "redis" in services["airflow-worker"]["depends_on"] and "redis" in env["AIRFLOW__CELERY__BROKER_URL"]
    # every service runs the same code: the Airflow services and the sandboxes share the project folders
    for name in ("airflow-scheduler", "airflow-worker", "airflow-dag-processor", "crm-sandbox"):
        assert any(v.startswith("./include:") for v in services[name]["volumes"]), name
    zoho = json.loads(env["AIRFLOW_CONN_ZOHO_CRM"])
    assert zoho["host"] == "http://crm-sandbox:8765" and zoho["extra"]["refresh_token"]
    crm_env = services["crm-sandbox"]["environment"]
    for var in ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"):  # server and client agree
        assert crm_env[var].split(":-")[0] in env["AIRFLOW_CONN_ZOHO_CRM"]
    # the receiver checks the same token the watch subscription sends
    token = services["crm-events"]["environment"]["CRM_NOTIFY_TOKEN"]
    assert token in env["AIRFLOW_CONN_CRM_NOTIFY"] and env["AIRFLOW_VAR_CRM_NOTIFY_URL"].startswith("http://crm-events:")
    # the documentation (README and docs/) promises these variables; the compose file must use each of them
    text = (ROOT / "docker-compose.yaml").read_text()
    readme = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    promised = set(re.findall(r"`(ERP_[A-Z_]+_PASSWORD|BRIDGE_DB_PASSWORD|AIRFLOW_[A-Z_]+)`", readme))
    assert {"ERP_READ_PASSWORD", "ERP_WRITE_PASSWORD", "BRIDGE_DB_PASSWORD", "ERP_DB_ADMIN_PASSWORD"} <= promised
    for var in promised & {"ERP_READ_PASSWORD", "ERP_WRITE_PASSWORD", "BRIDGE_DB_PASSWORD", "ERP_DB_ADMIN_PASSWORD"}:
        assert "${" + var in text, f"README names {var} but docker-compose.yaml does not use it"


def test_docker_compose_requires_its_secrets_binds_to_loopback_and_gives_each_service_its_own():
    """Deployment defaults fail closed: no default password, key or token anywhere; nothing published beyond this
    host; the superuser password only in the init job; the Airflow services log in as the least-privileged roles."""
    text = (ROOT / "docker-compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    secrets = {"AIRFLOW_DB_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "ERP_DB_ADMIN_PASSWORD",
               "ERP_OWNER_PASSWORD", "ERP_READ_PASSWORD", "ERP_WRITE_PASSWORD", "BRIDGE_DB_PASSWORD",
               "BRIDGE_APP_PASSWORD", "BRIDGE_RECEIVER_PASSWORD", "BRIDGE_CONSOLE_PASSWORD", "CRM_NOTIFY_TOKEN",
               "ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "_AIRFLOW_WWW_USER_PASSWORD"}
    used = dict(re.findall(r"\$\{([A-Z_]+)(:[?-][^}]*)?\}", text))
    for var in secrets:
        assert var in used and used[var].startswith(":?"), f"{var} must be required (${{{var}:?...}})"
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    holders = [n for n, svc in services.items() if "ERP_DB_ADMIN_PASSWORD" in yaml.safe_dump(svc.get("environment"))]
    assert holders == ["erp-db", "erp-sandbox-init"], holders  # the server itself, and the one init job
    env = services["airflow-worker"]["environment"]
    assert "PGPASSWORD" not in env and "bridge_app:" in env["AIRFLOW_CONN_BRIDGE_DB"]
    assert "user=bridge_receiver" in services["crm-events"]["environment"]["BRIDGE_DB_DSN"]
    api = services["airflow-apiserver"]["environment"]  # the console's connection, in the one service that serves it
    assert "bridge_console:" in api["AIRFLOW_CONN_BRIDGE_CONSOLE_DB"] and api["AIRFLOW_CONN_BRIDGE_DB"] == \
        env["AIRFLOW_CONN_BRIDGE_DB"] and "AIRFLOW_CONN_BRIDGE_CONSOLE_DB" not in env
    assert set(services["crm-sandbox"]["environment"]) == {"PYTHONPATH", "ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET",
                                                           "ZOHO_REFRESH_TOKEN"}
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{var}`" in docs for var in secrets), "docs/configuration.md lists every required secret"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_are_pinned_and_locked():
    reqs = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    assert reqs and all("==" in r for r in reqs)
    lock_lines = (ROOT / "constraints.txt").read_text().splitlines()
    lock = {canonical(ln.split("==")[0]): ln.split("==")[1] for ln in lock_lines if "==" in ln}
    for r in reqs:
        name, version = r.split("==")
        assert lock.get(canonical(name)) == version, f"{name} not locked at {version}"


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    assert "make demo" in head and "make test" in head


def test_readme_documents_every_contract_column(erp):
    """docs/erp-contract.md names every column of every erp_api view and erp_inbound table."""
    doc = (ROOT / "docs" / "erp-contract.md").read_text()
    contract = doc[doc.index("## ERP interface contract"):doc.index("### How a real ERP")]
    rows = erp.query("""SELECT table_schema, table_name, column_name FROM information_schema.columns
                        WHERE table_schema IN ('erp_api', 'erp_inbound') ORDER BY 1, 2, ordinal_position""")
    assert rows
    missing = [f"{r['table_schema']}.{r['table_name']}.{r['column_name']}" for r in rows
               if f"`{r['column_name']}`" not in contract or f"`{r['table_name']}`" not in contract]
    assert not missing, f"undocumented contract columns: {missing}"


def test_every_document_the_readme_links_exists_and_links_back():
    readme = (ROOT / "README.md").read_text()
    linked = re.findall(r"\]\((docs/[^)]+\.md)\)", readme)
    assert linked and {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")} <= set(linked)
    for path in linked:
        assert "../README.md" in (ROOT / path).read_text(), f"{path} does not link back to the README"


def test_env_sh_can_be_sourced_twice():
    """A shell that sourced scripts/env.sh and then runs make sources it again: the connections must survive."""
    import json
    import subprocess

    script = ". scripts/env.sh; first=\"$AIRFLOW_CONN_ZOHO_CRM\"; . scripts/env.sh; " \
             "printf '%s\\n%s' \"$first\" \"$AIRFLOW_CONN_ZOHO_CRM\""
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    first, second = out.split("\n")
    assert first == second and json.loads(second)["conn_type"] == "zoho_crm"
