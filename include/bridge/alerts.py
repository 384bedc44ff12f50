"""Alerts: what happened, rendered for e-mail and for IM webhooks (WeCom, DingTalk, Feishu, Slack).

Pure functions; sending lives in plugins/bridge_alerts. One alert per event per run: `claim()` records
(flow, run id, event key) in bridge.alert_log and only the first claim may send.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import html
from dataclasses import dataclass, field

IM_FORMATS = ("wecom", "dingtalk", "feishu", "slack")
KIND_LABEL = {"task_failure": "Task failed", "gate_failure": "Data quality gate failed",
              "business": "Business alert"}


@dataclass
class Alert:
    kind: str                     # task_failure | gate_failure | business
    flow: str                     # DAG / flow name
    run_id: str                   # Airflow run id: dedup scope
    event_key: str                # what happened, e.g. "gate" or "below_safety_stock"
    title: str
    lines: list[str] = field(default_factory=list)
    link: str | None = None       # Airflow log, GX Data Docs, report
    link_label: str = "Details"
    mentions: list[str] = field(default_factory=list)   # IM user ids to @-mention (e.g. the order's owner)

    @property
    def headline(self) -> str:
        return f"[{self.flow}] {KIND_LABEL.get(self.kind, self.kind)}: {self.title}"


def email(alert: Alert) -> tuple[str, str]:
    """(subject, html body)."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in alert.lines)
    link = (f'<p><a href="{html.escape(alert.link)}">{html.escape(alert.link_label)}</a></p>'
            if alert.link else "")
    body = (f"<h3>{html.escape(alert.headline)}</h3>"
            f"<p>Flow <b>{html.escape(alert.flow)}</b>, run <code>{html.escape(alert.run_id)}</code></p>"
            f"<ul>{items}</ul>{link}")
    return alert.headline, body


def im_safe(text: str, fmt: str) -> str:
    """Text from the data (CRM names, subjects, reasons) as plain text on an IM platform: it can mention nobody
    (Slack `<!channel>`, Feishu `<at user_id="all">`, WeCom `<@id>`) and link nowhere (markdown `[x](url)`); only
    the bridge's own mentions (from the allowlist Variable) and links are markup."""
    if fmt == "slack":
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("<", "‹").replace(">", "›")
    return text.replace("[", "［").replace("]", "］") if fmt in ("wecom", "dingtalk") else text


def im_payload(alert: Alert, fmt: str) -> dict:
    """The JSON body each platform's group-robot webhook expects (data text escaped for the platform)."""
    if fmt not in IM_FORMATS:
        raise ValueError(f"unknown IM format {fmt!r}; use one of {', '.join(IM_FORMATS)}")
    alert = dataclasses.replace(alert, title=im_safe(alert.title, fmt), flow=im_safe(alert.flow, fmt),
                                run_id=im_safe(alert.run_id, fmt), lines=[im_safe(ln, fmt) for ln in alert.lines])
    lines = alert.lines + ([f"{alert.link_label}: {alert.link}"] if alert.link else [])
    if fmt == "wecom":
        text = "\n".join([f"**{alert.headline}**", f"> run: {alert.run_id}"] + [f"> {ln}" for ln in alert.lines])
        if alert.link:
            text += f"\n[{alert.link_label}]({alert.link})"
        text += "".join(f"\n<@{m}>" for m in alert.mentions)  # WeCom markdown mentions a member by userid
        return {"msgtype": "markdown", "markdown": {"content": text}}
    if fmt == "dingtalk":
        text = "\n".join([f"#### {alert.headline}", f"run: {alert.run_id}", ""] + [f"- {ln}" for ln in alert.lines])
        if alert.link:
            text += f"\n\n[{alert.link_label}]({alert.link})"
        text += "".join(f" @{m}" for m in alert.mentions)  # DingTalk needs the @id in the text and in "at"
        body = {"msgtype": "markdown", "markdown": {"title": alert.headline, "text": text}}
        return body | ({"at": {"atUserIds": list(alert.mentions), "isAtAll": False}} if alert.mentions else {})
    if fmt == "feishu":
        mention = "".join(f'<at user_id="{m}"></at>' for m in alert.mentions)
        return {"msg_type": "text", "content": {"text": "\n".join(
            [alert.headline, f"run: {alert.run_id}", *lines] + ([mention] if mention else []))}}
    if fmt == "slack":
        mention = " ".join(f"<@{m}>" for m in alert.mentions)
        blocks = [{"type": "header", "text": {"type": "plain_text", "text": alert.headline[:150]}},
                  {"type": "section", "text": {"type": "mrkdwn",
                                               "text": "\n".join([f"run `{alert.run_id}`"]
                                                                 + [f"• {ln}" for ln in alert.lines]
                                                                 + ([mention] if mention else []))}}]
        if alert.link:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{alert.link}|{alert.link_label}>"}})
        return {"text": alert.headline, "blocks": blocks}
    raise AssertionError(fmt)  # checked above


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot 加签: base64(HMAC-SHA256(key=secret, msg=f'{timestamp}\\n{secret}')), sent url-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu bot signature: base64(HMAC-SHA256(key=f'{timestamp}\\n{secret}', msg=b''))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def claim(conn, alert: Alert, channels: list[str]) -> bool:
    """True for the first claim of (flow, run, event); later claims in the same run return False."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO bridge.alert_log (flow, run_id, event_key, kind, title, channels)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1""",
            (alert.flow, alert.run_id, alert.event_key, alert.kind, alert.title, channels),
        )
        first = cur.fetchone() is not None
    conn.commit()
    return first
