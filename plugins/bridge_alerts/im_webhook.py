"""Hook for IM group-robot webhooks: WeCom (企业微信), DingTalk (钉钉), Feishu (飞书 / Lark) and Slack.

Connection `im_webhook` (conn type http):
- host: the webhook endpoint without its token, e.g. https://qyapi.weixin.qq.com/cgi-bin/webhook/send,
  https://oapi.dingtalk.com/robot/send, https://open.feishu.cn/open-apis/bot/v2/hook,
  https://hooks.slack.com/services
- password: the robot's token (WeCom key, DingTalk access_token, Feishu hook id, Slack T…/B…/… path)
- extra: {"format": "wecom" | "dingtalk" | "feishu" | "slack", "secret": "SEC…"} — secret only when the robot
  signs requests (DingTalk 加签, Feishu 签名校验).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests
from airflow.sdk import BaseHook

from include.bridge.alerts import IM_FORMATS, dingtalk_sign, feishu_sign


class ImWebhookError(Exception):
    pass


class ImWebhookHook(BaseHook):
    conn_name_attr = "im_conn_id"
    default_conn_name = "im_webhook"
    conn_type = "http"
    hook_name = "IM webhook (WeCom / DingTalk / Feishu / Slack)"

    def __init__(self, im_conn_id: str = default_conn_name, timeout: float = 10, retries: int = 3, **kwargs: Any):
        super().__init__(**kwargs)
        self.im_conn_id, self.timeout, self.retries = im_conn_id, timeout, retries

    def _target(self) -> tuple[str, str, str | None]:
        conn = self.get_connection(self.im_conn_id)
        extra = conn.extra_dejson or {}
        fmt = extra.get("format", "")
        if fmt not in IM_FORMATS:
            raise ImWebhookError(f"connection '{self.im_conn_id}': extra.format must be one of {', '.join(IM_FORMATS)}")
        host = (conn.host or "").rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        token = conn.password or ""
        if fmt == "wecom":
            url = f"{host}?key={quote(token)}" if token else host
        elif fmt == "dingtalk":
            url = f"{host}?access_token={quote(token)}" if token else host
        else:  # feishu and slack carry the token in the path
            url = f"{host}/{token}" if token else host
        return fmt, url, extra.get("secret")

    def send(self, payload_for) -> str:
        """Send the payload `payload_for(fmt)` builds; returns the format used. Retries transport failures."""
        fmt, url, secret = self._target()
        body = dict(payload_for(fmt))
        params = {}
        if secret and fmt == "dingtalk":
            ts = int(time.time() * 1000)
            params = {"timestamp": ts, "sign": dingtalk_sign(secret, ts)}
        elif secret and fmt == "feishu":
            ts = int(time.time())
            body |= {"timestamp": str(ts), "sign": feishu_sign(secret, ts)}
        for attempt in range(self.retries + 1):
            try:
                resp = requests.post(url, json=body, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise ImWebhookError(f"{fmt} webhook unreachable: {type(exc).__name__}") from None
                time.sleep(min(2 ** attempt, 10))
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                if attempt == self.retries:
                    raise ImWebhookError(f"{fmt} webhook answered HTTP {resp.status_code}")
                time.sleep(min(2 ** attempt, 10))
                continue
            self._check(fmt, resp)
            return fmt
        raise AssertionError("unreachable")

    @staticmethod
    def _check(fmt: str, resp: requests.Response) -> None:
        if resp.status_code >= 400:
            raise ImWebhookError(f"{fmt} webhook refused the message: HTTP {resp.status_code}")
        if fmt == "slack":
            return  # Slack answers a plain "ok"
        try:
            body = resp.json()
        except ValueError:
            return
        code = body.get("errcode", body.get("code", body.get("StatusCode", 0)))
        if code not in (0, None):
            message = body.get("errmsg") or body.get("msg") or body.get("StatusMessage")
            raise ImWebhookError(f"{fmt} webhook refused the message: {code} {message}")
