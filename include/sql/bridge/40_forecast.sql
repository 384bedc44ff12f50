-- Stage 3 (forecast -> production planning, production dates -> CRM).

-- crm_forecast_to_erp: one row per product line of an open deal (PIPELINE) or per unshipped line of a confirmed
-- CRM order the ERP holds (ORDERS), as the gate sees them.
CREATE TABLE IF NOT EXISTS bridge.stg_crm_forecast_to_erp (
    batch_id        text NOT NULL,
    row_no          bigint NOT NULL,
    demand_type     text,             -- PIPELINE | ORDERS
    deal_id         text,             -- CRM deal id (ORDERS: the ERP order number)
    deal_name       text,
    stage           text,
    probability     numeric,          -- 0..100 (ORDERS: 100)
    closing_date    date,             -- ORDERS: the line's delivery date
    period_start    date,             -- the month the demand falls in
    region          text,
    item_source     text,             -- deal_items | quote | erp_order
    line_no         integer,
    product_crm_id  text,
    sku             text,
    known_sku       boolean,          -- linked in bridge.id_map and an active ERP item
    qty             numeric,
    weighted_qty    numeric,          -- qty x probability / 100, to 0.001
    horizon_start   date,
    horizon_end     date,
    in_horizon      boolean,          -- period_start inside the horizon (a closing date is set and not past)
    unreadable      text,             -- values that could not be read (text in Probability, a bad date)
    gate_ok         boolean,
    PRIMARY KEY (batch_id, row_no)
);
ALTER TABLE bridge.stg_crm_forecast_to_erp ADD COLUMN IF NOT EXISTS unreadable text;
DO $$ BEGIN  -- a huge quantity overflowed numeric(18, 3) while staging and failed the whole forecast
    IF (SELECT numeric_precision FROM information_schema.columns WHERE table_schema = 'bridge'
          AND table_name = 'stg_crm_forecast_to_erp' AND column_name = 'weighted_qty') IS NOT NULL THEN
        ALTER TABLE bridge.stg_crm_forecast_to_erp ALTER COLUMN weighted_qty TYPE numeric;
    END IF;
END $$;

-- The forecast of a batch: product x region x month x demand type, as sent to the ERP.
CREATE TABLE IF NOT EXISTS bridge.stg_crm_forecast_buckets (
    batch_id      text NOT NULL,
    row_no        bigint NOT NULL,
    sku           text,
    region        text,
    period_start  date,
    demand_type   text,
    qty           numeric(18, 3),
    deals         integer,           -- how many deals / orders the bucket sums
    horizon_start date,
    horizon_end   date,
    in_horizon    boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- Every forecast version the bridge produced. erp_batch_id is the ERP inbound batch (run batch + content hash:
-- a retry re-sends the same rows under the same keys, a changed pipeline is a new version).
CREATE TABLE IF NOT EXISTS bridge.forecast_version (
    erp_batch_id    text PRIMARY KEY,
    batch_id        text NOT NULL,
    run_id          text,
    horizon_start   date NOT NULL,
    horizon_end     date NOT NULL,
    content_hash    text NOT NULL,
    row_count       integer NOT NULL,
    total_qty       numeric(18, 3) NOT NULL,
    sent_at         timestamptz,     -- every row committed in erp_inbound.demand_forecast_in
    erp_status      text,            -- PROCESSED (active in the ERP) | ERROR
    erp_version_no  text,
    erp_message     text,
    answered_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS forecast_version_answered ON bridge.forecast_version (answered_at DESC);

-- erp_production_to_crm: production orders behind CRM-linked sales orders (erp_api.production_schedule).
CREATE TABLE IF NOT EXISTS bridge.stg_erp_production_to_crm (
    batch_id                 text NOT NULL,
    row_no                   bigint NOT NULL,
    mo_no                    text,
    sku                      text,
    qty                      numeric,
    planned_start            date,
    planned_finish           date,
    original_planned_finish  date,
    actual_start             date,
    actual_finish            date,
    status                   text,
    material_status          text,
    material_due_date        date,
    erp_order_no             text,
    updated_at               timestamptz,
    known_order              boolean,
    gate_ok                  boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- erp_capacity_warnings_to_crm: per manufactured SKU and week, capacity against firm + forecast demand and
-- the production planned to finish that week.
CREATE TABLE IF NOT EXISTS bridge.stg_erp_capacity_warnings_to_crm (
    batch_id          text NOT NULL,
    row_no            bigint NOT NULL,
    sku               text,
    week_start        date,
    weekly_capacity   numeric,
    firm_demand       numeric,
    forecast_demand   numeric,
    planned_qty       numeric,
    late_material     integer,        -- production orders that week whose material arrives after their start
    material_due_date date,
    updated_at        timestamptz,
    known_sku         boolean,
    gate_ok           boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- Expected ship date last shown per CRM order, and the last date an owner was told about (one alert per slip).
CREATE TABLE IF NOT EXISTS bridge.ship_date_notice (
    crm_id          text PRIMARY KEY,
    erp_order_no    text NOT NULL,
    notified_date   date NOT NULL,
    notified_at     timestamptz NOT NULL DEFAULT now()
);
