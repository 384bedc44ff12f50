-- The daily preflight of each flow against the CRM org's fields (include/bridge/doctor.py): a pass is remembered
-- for the day, so the check costs one metadata call per module per flow per day.
CREATE TABLE IF NOT EXISTS bridge.crm_preflight (
    flow        text NOT NULL,
    checked_on  date NOT NULL,
    ok          boolean NOT NULL,
    problems    jsonb NOT NULL DEFAULT '[]',
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, checked_on)
);
