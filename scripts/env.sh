# shellcheck shell=bash
# Sourced by every project script: one place for local defaults. Anything already set in the
# environment wins, so CI, docker-compose or a real deployment override by exporting variables.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export LOCAL_DIR="${LOCAL_DIR:-$ROOT/.local}"          # ignored by git: venv-independent state
mkdir -p "$LOCAL_DIR"

# PostgreSQL server that holds the ERP sandbox and the integration DB (libpq variables).
export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-5432}"
export PGUSER="${PGUSER:-postgres}"
export ERP_DB="${ERP_DB:-erp_sandbox}"
export BRIDGE_DB="${BRIDGE_DB:-bridge}"

# Passwords of the sandbox ERP's integration roles: generated once per checkout, never committed.
SECRETS_FILE="$LOCAL_DIR/secrets.env"
if [ ! -f "$SECRETS_FILE" ]; then
  umask 077
  {
    echo "ERP_READ_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    echo "ERP_WRITE_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  } > "$SECRETS_FILE"
fi
if ! grep -q '^ZOHO_CLIENT_ID=' "$SECRETS_FILE"; then  # OAuth client of the local CRM sandbox
  {
    echo "ZOHO_CLIENT_ID=1000.$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Z0-9')"
    echo "ZOHO_CLIENT_SECRET=$(head -c 24 /dev/urandom | base64 | tr -dc 'a-z0-9')"
    echo "ZOHO_REFRESH_TOKEN=1000.$(head -c 24 /dev/urandom | base64 | tr -dc 'a-f0-9').$(head -c 12 /dev/urandom | base64 | tr -dc 'a-f0-9')"
  } >> "$SECRETS_FILE"
fi
if ! grep -q '^BRIDGE_CONSOLE_PASSWORD=' "$SECRETS_FILE"; then  # the operator console's role on the bridge DB
  echo "BRIDGE_CONSOLE_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" >> "$SECRETS_FILE"
fi
if ! grep -q '^ERP_ROLE_SUFFIX=' "$SECRETS_FILE"; then  # this checkout's own ERP sandbox roles (server-wide)
  echo "ERP_ROLE_SUFFIX=$(head -c 12 /dev/urandom | base64 | tr -dc 'a-z0-9' | head -c 6)" >> "$SECRETS_FILE"
fi
set -a
# shellcheck disable=SC1090
. "$SECRETS_FILE"
set +a
export ERP_READ_ROLE="${ERP_READ_ROLE:-erp_reader_${ERP_ROLE_SUFFIX}}"
export ERP_WRITE_ROLE="${ERP_WRITE_ROLE:-erp_writer_${ERP_ROLE_SUFFIX}}"

# Airflow on the embedded default: SQLite metadata DB and logs under .local/airflow.
export AIRFLOW_HOME="${AIRFLOW_HOME:-$LOCAL_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
# An idle scheduler looks for work 4x a second, not once: each hop between an order's tasks is that much shorter
# (docs/benchmarks.md, confirm -> ERP number); a handful of small queries more per second on the metadata DB.
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.25}"
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"

# The Zoho CRM sandbox server (include/sandbox/crm): address and data folder.
export CRM_SANDBOX_HOST="${CRM_SANDBOX_HOST:-127.0.0.1}"
export CRM_SANDBOX_PORT="${CRM_SANDBOX_PORT:-8765}"
export CRM_SANDBOX_URL="${CRM_SANDBOX_URL:-http://${CRM_SANDBOX_HOST}:${CRM_SANDBOX_PORT}}"

# Airflow connections of the local setup (a real deployment defines these in its secrets backend).
export AIRFLOW_CONN_ERP_READ="${AIRFLOW_CONN_ERP_READ:-postgresql://${ERP_READ_ROLE}:${ERP_READ_PASSWORD}@${PGHOST}:${PGPORT}/${ERP_DB}}"
export AIRFLOW_CONN_ERP_WRITE="${AIRFLOW_CONN_ERP_WRITE:-postgresql://${ERP_WRITE_ROLE}:${ERP_WRITE_PASSWORD}@${PGHOST}:${PGPORT}/${ERP_DB}}"
# (an if, not ${VAR:-default}: the JSON default has braces, and a set variable would keep its trailing "}}")
if [ -z "${AIRFLOW_CONN_ZOHO_CRM:-}" ]; then
  export AIRFLOW_CONN_ZOHO_CRM="{\"conn_type\": \"zoho_crm\", \"host\": \"${CRM_SANDBOX_URL}\", \"login\": \"${ZOHO_CLIENT_ID}\", \"password\": \"${ZOHO_CLIENT_SECRET}\", \"extra\": {\"accounts_url\": \"${CRM_SANDBOX_URL}\", \"file_upload_url\": \"${CRM_SANDBOX_URL}\", \"refresh_token\": \"${ZOHO_REFRESH_TOKEN}\"}}"
fi
# Who may release a credit hold from the CRM: the CRM sandbox's credit controller (a real org lists its own user ids).
export AIRFLOW_VAR_BRIDGE_CREDIT_APPROVERS="${AIRFLOW_VAR_BRIDGE_CREDIT_APPROVERS:-[\"5843104000000424021\"]}"
export AIRFLOW_CONN_BRIDGE_DB="${AIRFLOW_CONN_BRIDGE_DB:-postgresql://${PGUSER}@${PGHOST}:${PGPORT}/${BRIDGE_DB}}"
# The operator console (plugins/bridge_console) reads through its own role: this checkout's, server-wide.
export BRIDGE_CONSOLE_ROLE="${BRIDGE_CONSOLE_ROLE:-bridge_console_${ERP_ROLE_SUFFIX}}"
export AIRFLOW_CONN_BRIDGE_CONSOLE_DB="${AIRFLOW_CONN_BRIDGE_CONSOLE_DB:-postgresql://${BRIDGE_CONSOLE_ROLE}:${BRIDGE_CONSOLE_PASSWORD}@${PGHOST}:${PGPORT}/${BRIDGE_DB}}"
