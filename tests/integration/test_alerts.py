"""Alerts through real channels: an aiosmtpd SMTP server and a local HTTP webhook receiver."""

import base64
import hashlib
import hmac
import json
from email import message_from_bytes
from urllib.parse import unquote

import pytest

from include.bridge.alerts import Alert, im_payload
from include.sandbox.crm.process import free_port

TOKENS = {"wecom": "wecom-key-123", "dingtalk": "ding-token-456", "feishu": "feishu-hook-789",
          "slack": "T000/B000/XXXX"}
SECRETS = {"dingtalk": "SECding", "feishu": "feishu-secret"}


@pytest.fixture(scope="module")
def smtp():
    from aiosmtpd.controller import Controller

    class Handler:
        messages: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            Handler.messages.append(envelope)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, Handler.messages
    controller.stop()


@pytest.fixture
def channels(monkeypatch, webhook, smtp, bridge):
    controller, messages = smtp
    messages.clear()
    webhook.calls.clear()
    webhook.reply = {}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
        "extra": {"from_email": "bridge@demo-company.cn", "disable_tls": True, "disable_ssl": True}}))
    paths = {"wecom": "/cgi-bin/webhook/send", "dingtalk": "/robot/send", "feishu": "/open-apis/bot/v2/hook",
             "slack": "/services"}
    for fmt, path in paths.items():
        extra = {"format": fmt} | ({"secret": SECRETS[fmt]} if fmt in SECRETS else {})
        monkeypatch.setenv(f"AIRFLOW_CONN_IM_{fmt.upper()}", json.dumps({
            "conn_type": "http", "host": webhook.url + path, "password": TOKENS[fmt], "extra": extra}))
    monkeypatch.setenv("AIRFLOW_CONN_BRIDGE_TEST", f"postgresql://{bridge[1].info.user}@{bridge[1].info.host}:"
                                                   f"{bridge[1].info.port}/{bridge[0]}")
    return messages


def gate_alert(run_id="manual__2026-11-24T08:00:00"):
    return Alert(kind="gate_failure", flow="erp_stock_to_crm", run_id=run_id, event_key="gate",
                 title="batch b-42 not loaded: 2 expectations failed on 1,234 of 10,000 rows",
                 lines=["expect_column_values_to_not_be_null(sku): 1,200 rows",
                        "expect_column_values_to_be_between(on_hand, min 0): 34 rows"],
                 link="http://localhost:8080/data_docs/erp_stock_to_crm/b-42.html", link_label="Data Docs")


def test_im_payloads_reach_each_platform_exactly(channels, webhook):
    from bridge_alerts.notifier import send_alert

    alert = gate_alert()
    sent = send_alert(alert, im_conn_ids=["im_wecom", "im_dingtalk", "im_feishu", "im_slack"])
    assert sent == ["im:im_wecom:wecom", "im:im_dingtalk:dingtalk", "im:im_feishu:feishu", "im:im_slack:slack"]
    wecom, ding, feishu, slack = webhook.calls
    assert wecom["path"] == "/cgi-bin/webhook/send" and wecom["query"] == {"key": [TOKENS["wecom"]]}
    assert wecom["body"] == {"msgtype": "markdown", "markdown": {"content": (
        "**[erp_stock_to_crm] Data quality gate failed: batch b-42 not loaded: 2 expectations failed on 1,234 of "
        "10,000 rows**\n> run: manual__2026-11-24T08:00:00\n"
        "> expect_column_values_to_not_be_null(sku): 1,200 rows\n"
        "> expect_column_values_to_be_between(on_hand, min 0): 34 rows\n"
        "[Data Docs](http://localhost:8080/data_docs/erp_stock_to_crm/b-42.html)")}}
    assert ding["query"]["access_token"] == [TOKENS["dingtalk"]]
    ts = ding["query"]["timestamp"][0]
    expected_sign = base64.b64encode(hmac.new(b"SECding", f"{ts}\nSECding".encode(), hashlib.sha256).digest())
    assert unquote(ding["query"]["sign"][0]) == expected_sign.decode()
    assert ding["body"] == im_payload(alert, "dingtalk") and ding["body"]["msgtype"] == "markdown"
    assert feishu["path"] == f"/open-apis/bot/v2/hook/{TOKENS['feishu']}"
    fts = feishu["body"]["timestamp"]
    assert feishu["body"]["sign"] == base64.b64encode(
        hmac.new(f"{fts}\nfeishu-secret".encode(), b"", hashlib.sha256).digest()).decode()
    assert feishu["body"]["msg_type"] == "text" and feishu["body"]["content"]["text"].splitlines()[-1] == (
        "Data Docs: http://localhost:8080/data_docs/erp_stock_to_crm/b-42.html")
    assert slack["path"] == f"/services/{TOKENS['slack']}"
    assert slack["body"]["text"] == alert.headline
    assert [b["type"] for b in slack["body"]["blocks"]] == ["header", "section", "section"]


def test_email_arrives_with_the_content(channels):
    from bridge_alerts.notifier import send_alert

    sent = send_alert(gate_alert(), email_to=["ops@demo-company.cn", "sales.manager@demo-company.cn"],
                      smtp_conn_id="smtp_test", im_conn_ids=[])
    assert sent == ["email:smtp_test"]
    assert len(channels) == 1
    envelope = channels[0]
    assert envelope.rcpt_tos == ["ops@demo-company.cn", "sales.manager@demo-company.cn"]
    msg = message_from_bytes(envelope.content)
    assert msg["Subject"] == gate_alert().headline and msg["From"] == "bridge@demo-company.cn"
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert "expect_column_values_to_not_be_null(sku): 1,200 rows" in html and "b-42.html" in html


def test_one_alert_per_event_per_run(channels, bridge, webhook):
    from bridge_alerts.notifier import send_alert

    conn = bridge[1]
    kwargs = {"email_to": "ops@demo-company.cn", "smtp_conn_id": "smtp_test", "im_conn_ids": ["im_wecom"],
              "bridge_conn": conn}
    first = send_alert(gate_alert("run-1"), **kwargs)
    again = send_alert(gate_alert("run-1"), **kwargs)
    other_run = send_alert(gate_alert("run-2"), **kwargs)
    assert first and again == [] and other_run
    assert len(channels) == 2 and len(webhook.calls) == 2


def test_a_refusing_platform_does_not_silence_email(channels, webhook):
    from bridge_alerts.im_webhook import ImWebhookError
    from bridge_alerts.notifier import send_alert

    webhook.reply = {"/cgi-bin/webhook/send": {"errcode": 93000, "errmsg": "invalid webhook url"}}
    sent = send_alert(gate_alert(), email_to="ops@demo-company.cn", smtp_conn_id="smtp_test", im_conn_ids=["im_wecom"])
    assert sent == ["email:smtp_test"] and len(channels) == 1
    with pytest.raises(ImWebhookError) as exc:
        send_alert(gate_alert(), im_conn_ids=["im_wecom"])
    assert "93000 invalid webhook url" in str(exc.value) and TOKENS["wecom"] not in str(exc.value)


FAILING_DAG = """
import pendulum
from airflow.sdk import dag, task
from bridge_alerts.notifier import BridgeFailureNotifier

notifier = BridgeFailureNotifier(email_to="ops@demo-company.cn", smtp_conn_id="smtp_test",
                                 im_conn_ids=["im_slack"], bridge_conn_id="bridge_test")


@dag(dag_id="alert_test_failing", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
     default_args={"owner": "test", "retries": 0})
def alert_test_failing():
    @task(on_failure_callback=notifier)
    def explode(dag_run=None):
        from include.bridge import db, engine
        from include.bridge.runtime import pg_connect

        conn = pg_connect("bridge_test")  # the run opens its ledger row, then dies
        db.install_schema(conn)
        engine.start_run(conn, "alert_test_failing", dag_run.run_id)
        conn.close()
        raise ValueError("ERP connection lost while loading batch b-7")

    explode()


alert_test_failing()
"""

RUN_DAG = """
import sys
from airflow.dag_processing.dagbag import DagBag
run = DagBag().get_dag("alert_test_failing").test()
print("STATE", run.state)
"""


@pytest.mark.slow
def test_failed_task_alerts_once_through_a_real_dag_run(channels, bridge, tmp_path, webhook):
    import os
    import subprocess
    import sys

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "alert_test_failing.py").write_text(FAILING_DAG)
    env = os.environ | {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
                        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, "-c", RUN_DAG], env=env, capture_output=True, text=True, timeout=300)
    assert "STATE failed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(channels) == 1 and len(webhook.calls) == 1
    text = json.dumps(webhook.calls[0]["body"], ensure_ascii=False)
    assert "task explode failed" in text and "ERP connection lost while loading batch b-7" in text
    with bridge[1].cursor() as cur:
        cur.execute("SELECT flow, event_key FROM bridge.alert_log WHERE flow = 'alert_test_failing'")
        assert cur.fetchall() == [("alert_test_failing", "task_failure:explode")]
        cur.execute("SELECT status, message FROM bridge.run_ledger WHERE flow = 'alert_test_failing'")
        [(status, message)] = cur.fetchall()  # not left "running" for ever
        assert status == "failed" and "ERP connection lost" in message, (status, message)
    bridge[1].commit()


HOSTILE = ['<!channel> <!here> <@U0ADMIN> <https://evil.example|click>', '<at user_id="all"></at> <@everyone>',
           '[reset your password](https://evil.example) ![x](https://evil.example/pixel.png)']


def test_crm_text_in_im_alerts_mentions_nobody_and_links_nowhere():
    """Order subjects and account names are typed by anyone: in an alert they are plain text on every platform;
    only the bridge's own mentions (the allowlist) and links stay markup."""
    alert = Alert(kind="business", flow="erp_production_to_crm", run_id="r1", event_key="slip:1", title=HOSTILE[0],
                  lines=HOSTILE, link="http://localhost:8080/log", link_label="Task log", mentions=["wangli"])
    wecom = im_payload(alert, "wecom")["markdown"]["content"]
    assert "<!channel>" not in wecom and "<@U0ADMIN>" not in wecom and "](https://evil" not in wecom
    assert wecom.endswith("\n<@wangli>") and "[Task log](http://localhost:8080/log)" in wecom
    ding = im_payload(alert, "dingtalk")
    assert "](https://evil" not in ding["markdown"]["text"] and ding["at"]["atUserIds"] == ["wangli"]
    feishu = im_payload(alert, "feishu")["content"]["text"]
    assert '<at user_id="all">' not in feishu and feishu.endswith('<at user_id="wangli"></at>')
    slack = json.dumps(im_payload(alert, "slack"))
    assert "<!channel>" not in slack and "<!here>" not in slack and "<https://evil" not in slack
    assert "<@wangli>" in slack and "<http://localhost:8080/log|Task log>" in slack
