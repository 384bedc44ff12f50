"""Where Tryton's database is and how to open it — runs in Tryton's venv.

Tryton reads its database URI from TRYTOND_DATABASE__URI (its own config-by-environment convention); the default is
the local PostgreSQL from libpq's variables (PGHOST, PGPORT, PGUSER), as the rest of the project uses.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

MODULES = ("sale", "sale_supply", "sale_supply_production", "sale_price_list", "sale_credit_limit", "stock",
           "stock_forecast", "production", "account_invoice", "account_invoice_stock", "account_credit_limit")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    if "TRYTOND_DATABASE__URI" not in env:
        env["TRYTOND_DATABASE__URI"] = (f"postgresql://{env.get('PGUSER', 'postgres')}@{env.get('PGHOST', '127.0.0.1')}"
                                        f":{env.get('PGPORT', '5432')}/")
    env.setdefault("TRYTOND_DATABASE__PATH", os.path.join(env.get("LOCAL_DIR", ".local"), "tryton", "data"))
    return env


def admin(dbname: str, *args: str) -> None:
    """trytond-admin on `dbname` (Tryton's own installer: creates its tables, activates modules)."""
    env = environment()
    if "TRYTONPASSFILE" not in env:  # Tryton's admin password: generated once per checkout, never committed
        path = os.path.join(env.get("LOCAL_DIR", ".local"), "tryton", "admin_password")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(secrets.token_urlsafe(18) + "\n")
        env["TRYTONPASSFILE"] = path
    admin_bin = os.path.join(os.path.dirname(sys.executable), "trytond-admin")
    subprocess.run([admin_bin, "-d", dbname, *args], check=True, env=env)


def connect(dbname: str):
    """proteus on `dbname` in-process (trytond library mode), as the admin user; returns the proteus config."""
    os.environ.update({k: v for k, v in environment().items() if k.startswith("TRYTOND_")})
    from proteus import Model, config

    cfg = config.set_trytond(database=dbname)
    # the user's preferences carry the company: without it, company-dependent values (list prices, credit
    # limits, accounts) would be read and written for no company
    cfg._context = Model.get("res.user").get_preferences(True, {})
    # a batch job answers warnings ("payment date in the past" for back-dated history) as a user clicking through
    cfg.skip_warning = True
    return cfg
