-- The integration's own state (database bridge_db, schema bridge). Idempotent: safe to run on every start.
CREATE SCHEMA IF NOT EXISTS bridge;

-- Incremental position per flow and source; advanced only after the load committed.
CREATE TABLE IF NOT EXISTS bridge.watermark (
    flow        text NOT NULL,
    source      text NOT NULL DEFAULT 'default',
    value       timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    run_id      text,
    PRIMARY KEY (flow, source)
);

-- One row per flow run (Airflow run id + batch id): counts and seconds per step.
CREATE TABLE IF NOT EXISTS bridge.run_ledger (
    batch_id          text PRIMARY KEY,
    flow              text NOT NULL,
    airflow_run_id    text,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'success', 'partial', 'gate_failed', 'failed', 'dry_run')),
    rows_extracted    bigint NOT NULL DEFAULT 0,
    rows_passed       bigint NOT NULL DEFAULT 0,
    rows_loaded       bigint NOT NULL DEFAULT 0,
    rows_quarantined  bigint NOT NULL DEFAULT 0,
    rows_failed       bigint NOT NULL DEFAULT 0,
    step_seconds      jsonb NOT NULL DEFAULT '{}',
    message           text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
CREATE INDEX IF NOT EXISTS run_ledger_flow ON bridge.run_ledger (flow, started_at DESC);

-- Records that failed a gate or a load, with the reasons; replayed once fixed at the source.
CREATE TABLE IF NOT EXISTS bridge.quarantine (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow          text NOT NULL,
    batch_id      text NOT NULL,
    business_key  text NOT NULL,
    payload       jsonb NOT NULL,
    reasons       text[] NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'dismissed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    resolved_by   text
);
CREATE INDEX IF NOT EXISTS quarantine_open ON bridge.quarantine (flow, business_key) WHERE status = 'open';

-- The same customer / product / order on both sides.
CREATE TABLE IF NOT EXISTS bridge.id_map (
    entity      text NOT NULL,            -- customer, product, sales_order, ...
    erp_key     text NOT NULL,
    crm_id      text NOT NULL,
    match_rule  text,                     -- exact key, credit code, name similarity, created by sync ...
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, erp_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS id_map_crm ON bridge.id_map (entity, crm_id);
CREATE INDEX IF NOT EXISTS id_map_updated ON bridge.id_map (entity, updated_at);  -- newly linked keys

-- Every write to either system: who (flow, run) / what (key) / when / before / after.
CREATE TABLE IF NOT EXISTS bridge.audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow           text NOT NULL,
    target_system  text NOT NULL CHECK (target_system IN ('crm', 'erp', 'bridge')),  -- bridge: links (id_map)
    entity         text NOT NULL,
    business_key   text NOT NULL,
    before         jsonb,
    after          jsonb,
    run_id         text,
    batch_id       text,
    at             timestamptz NOT NULL DEFAULT now()
);
DO $$ BEGIN  -- installs from before link changes were audited ('bridge': a change of bridge.id_map)
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'audit_log_target_system_check'
                 AND pg_get_constraintdef(oid) NOT LIKE '%bridge%') THEN
        ALTER TABLE bridge.audit_log DROP CONSTRAINT audit_log_target_system_check,
            ADD CONSTRAINT audit_log_target_system_check CHECK (target_system IN ('crm', 'erp', 'bridge'));
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS audit_log_key ON bridge.audit_log (entity, business_key, at);
CREATE INDEX IF NOT EXISTS audit_log_batch ON bridge.audit_log (batch_id);

-- One alert per event per run: a notifier claims (flow, run, event) before sending.
CREATE TABLE IF NOT EXISTS bridge.alert_log (
    flow        text NOT NULL,
    run_id      text NOT NULL,
    event_key   text NOT NULL,
    kind        text NOT NULL,
    title       text NOT NULL,
    channels    text[] NOT NULL DEFAULT '{}',
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, run_id, event_key)
);
