-- The operator console (plugins/bridge_console): what people did from it and why, and where each gate's Data Docs are.

-- A dismissed quarantine entry keeps the person's reason beside who and when.
ALTER TABLE bridge.quarantine ADD COLUMN IF NOT EXISTS resolution_comment text;

-- Every action taken in the console: who, when, on which entries, why, and the DAG run it started.
CREATE TABLE IF NOT EXISTS bridge.console_action (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action          text NOT NULL CHECK (action IN ('replay', 'dismiss')),
    actor           text NOT NULL,
    flow            text NOT NULL,
    dag_id          text NOT NULL,
    quarantine_ids  bigint[] NOT NULL,
    business_keys   text[] NOT NULL,
    comment         text,
    dag_run_id      text,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS console_action_at ON bridge.console_action (at DESC);

-- The gate's Data Docs pages of a batch: suite -> pages, relative to $BRIDGE_DATA_DOCS_DIR.
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS gate_docs jsonb NOT NULL DEFAULT '{}';

-- Zoho API credits a run spent (the CRM client counts them by Zoho's price list, step by step).
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS crm_credits bigint NOT NULL DEFAULT 0;
