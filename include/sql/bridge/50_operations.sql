-- Operations (issue 8): reconciliation, dry-run previews, rollbacks, rollout state.

-- A run may be skipped by its rollout switch (enabled: false), or be a dry run.
ALTER TABLE bridge.run_ledger DROP CONSTRAINT IF EXISTS run_ledger_status_check;
ALTER TABLE bridge.run_ledger ADD CONSTRAINT run_ledger_status_check
    CHECK (status IN ('running', 'success', 'partial', 'gate_failed', 'failed', 'dry_run', 'skipped', 'rolled_back'));
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'live';  -- live | dry_run | pilot

-- The CRM record / ERP document an audit row is about (rollback finds what to restore by it).
ALTER TABLE bridge.audit_log ADD COLUMN IF NOT EXISTS record_id text;

-- What a dry run would have written: nothing goes to either system, this table and the report say what would.
CREATE TABLE IF NOT EXISTS bridge.dry_run_preview (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow           text NOT NULL,
    batch_id       text NOT NULL,
    run_id         text,
    target_system  text NOT NULL CHECK (target_system IN ('crm', 'erp', 'quarantine')),
    entity         text NOT NULL,
    business_key   text NOT NULL,
    record_id      text,
    action         text NOT NULL,      -- update | upsert | insert | create | amend | cancel | quarantine | ...
    before         jsonb,
    after          jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dry_run_preview_batch ON bridge.dry_run_preview (batch_id);

-- Rollbacks of runs: what was restored, from the audit log's before-images.
CREATE TABLE IF NOT EXISTS bridge.rollback_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rolled_back      text NOT NULL,     -- batch id of the run rolled back
    flow             text NOT NULL,
    rollback_run_id  text,
    target_system    text NOT NULL,
    entity           text NOT NULL,
    business_key     text NOT NULL,
    record_id        text,
    action           text NOT NULL,     -- restored | deleted | cancel_sent | amend_sent | not_reversible | failed
    detail           text,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rollback_log_batch ON bridge.rollback_log (rolled_back);

-- Reconciliation: snapshots of both sides, then the differences.
CREATE TABLE IF NOT EXISTS bridge.recon_crm (
    batch_id  text NOT NULL,
    module    text NOT NULL,
    crm_id    text NOT NULL,
    values    jsonb NOT NULL,
    PRIMARY KEY (batch_id, module, crm_id)
);
CREATE TABLE IF NOT EXISTS bridge.recon_erp (
    batch_id  text NOT NULL,
    entity    text NOT NULL,      -- stock, credit, order, customer
    key       text NOT NULL,
    values    jsonb NOT NULL,
    PRIMARY KEY (batch_id, entity, key)
);
CREATE TABLE IF NOT EXISTS bridge.reconciliation_difference (
    batch_id          text NOT NULL,
    row_no            bigint NOT NULL,
    run_date          date NOT NULL,
    kind              text,        -- stock_mismatch, credit_mismatch, order_status_mismatch, order_missing_in_erp,
                                   -- order_missing_in_crm, duplicate_customer_crm, duplicate_customer_erp
    entity            text,
    business_key      text,
    crm_id            text,
    crm_value         jsonb,
    erp_value         jsonb,
    system_of_record  text,        -- crm | erp: which side is right
    corrected_by      text,        -- the flow (or the review step) that should correct it
    detail            text,
    PRIMARY KEY (batch_id, row_no)
);
CREATE INDEX IF NOT EXISTS reconciliation_difference_date ON bridge.reconciliation_difference (run_date, kind);
CREATE TABLE IF NOT EXISTS bridge.reconciliation_run (
    batch_id      text PRIMARY KEY,
    run_id        text,
    run_date      date NOT NULL,
    counts        jsonb NOT NULL,          -- kind -> differences
    total         integer NOT NULL,
    compared      jsonb NOT NULL,          -- what was compared: products, customers, orders per side
    threshold     integer NOT NULL,
    report_path   text,
    alerted       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- What the CRM held before a flow's first write of a record (later writes take it from synced_state).
ALTER TABLE bridge.load_queue ADD COLUMN IF NOT EXISTS before jsonb;
