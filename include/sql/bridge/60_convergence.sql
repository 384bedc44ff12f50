-- Convergence after faults (issue 15): attempts kept, intervals recorded, loads that never go backwards,
-- before-images kept across retries.

-- A run's ledger row is its latest attempt; a retry or a clear that reopens it first copies the attempt it ends
-- into bridge.run_attempt, so the history of a failure is never overwritten.
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS attempt integer NOT NULL DEFAULT 1;
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS interval_start timestamptz;  -- what the run read: since
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS interval_end timestamptz;    -- ... until
ALTER TABLE bridge.run_ledger ADD COLUMN IF NOT EXISTS backfill boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS run_ledger_running ON bridge.run_ledger (flow) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS bridge.run_attempt (
    batch_id          text NOT NULL,
    attempt           integer NOT NULL,
    flow              text NOT NULL,
    airflow_run_id    text,
    status            text NOT NULL,
    mode              text,
    rows_extracted    bigint,
    rows_loaded       bigint,
    rows_quarantined  bigint,
    rows_failed       bigint,
    step_seconds      jsonb,
    message           text,
    interval_start    timestamptz,
    interval_end      timestamptz,
    backfill          boolean,
    started_at        timestamptz,
    finished_at       timestamptz,
    ended_by          text NOT NULL,   -- what ended it: the status it had when the next attempt started
    PRIMARY KEY (batch_id, attempt)
);

-- The source's version of what a mirror wrote per key: the ERP snapshot time its values were read at. A load
-- writes a key only if no newer version of it has been written (claimed under a row lock held across the write),
-- so a backfill or a retried old batch never overwrites newer values; the synced state follows the same rule.
CREATE TABLE IF NOT EXISTS bridge.key_version (
    flow          text NOT NULL,
    business_key  text NOT NULL,
    version       timestamptz NOT NULL,
    batch_id      text NOT NULL,
    PRIMARY KEY (flow, business_key)
);
ALTER TABLE bridge.synced_state ADD COLUMN IF NOT EXISTS source_version timestamptz;
ALTER TABLE bridge.load_queue ADD COLUMN IF NOT EXISTS source_version timestamptz;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'load_queue_status_check'
                 AND pg_get_constraintdef(oid) NOT LIKE '%superseded%') THEN
        ALTER TABLE bridge.load_queue DROP CONSTRAINT load_queue_status_check,
            ADD CONSTRAINT load_queue_status_check CHECK (status IN ('pending', 'loaded', 'failed', 'superseded'));
    END IF;
END $$;

-- The CRM values a batch's first attempt found before writing a record: a retry or a clear of the same batch
-- (same batch id) audits against these, never against what its own earlier attempt wrote.
CREATE TABLE IF NOT EXISTS bridge.before_image (
    batch_id     text NOT NULL,
    record_id    text NOT NULL,          -- "<Module>:<CRM id>"
    before       jsonb NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, record_id)
);
