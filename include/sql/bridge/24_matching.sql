-- master_data_match: what a person must decide. Rebuilt on every run (open items of the run replace the
-- previous open items); decided items keep their status. A decision is recorded by linking in bridge.id_map
-- with match_rule 'manual' (never overridden by the matcher) or by setting status 'dismissed'.
CREATE TABLE IF NOT EXISTS bridge.match_review (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      text NOT NULL,                 -- customer, product
    issue       text NOT NULL,                 -- ambiguous, duplicate_in_crm, duplicate_in_erp, conflict, ...
    crm_id      text,
    crm_label   text,
    erp_key     text,
    score       numeric(5, 3),
    candidates  jsonb NOT NULL DEFAULT '[]',   -- [{erp_key, name, score, rule}]
    detail      text,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'dismissed')),
    run_id      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS match_review_open ON bridge.match_review (entity, status);
