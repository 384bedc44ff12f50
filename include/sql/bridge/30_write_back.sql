-- Stage 2 (CRM -> ERP write-back): staging of CRM orders and the outbox that makes sending exactly-once.

-- One row per order line of a batch, header fields repeated (the gate validates lines and headers at once).
CREATE TABLE IF NOT EXISTS bridge.stg_crm_orders_to_erp (
    batch_id          text NOT NULL,
    row_no            bigint NOT NULL,
    crm_id            text,
    source_module     text,            -- Sales_Orders | Quotes
    subject           text,
    crm_status        text,
    customer_crm_id   text,
    customer_code     text,            -- through bridge.id_map (master_data_match)
    known_customer    boolean,
    currency          text,
    exchange_rate     numeric,
    home_currency     text,
    rate_ok           boolean,         -- home currency, or a foreign one with its rate
    grand_total       numeric,
    is_prepaid        boolean,
    credit_check      text,
    approved_by       text,
    due_date          date,
    unreadable        text,            -- values that could not be read (text in a number field, NaN, a bad date)
    line_no           integer,
    product_crm_id    text,
    sku               text,            -- through bridge.id_map (Product_Code)
    known_sku         boolean,
    qty               numeric,
    list_price        numeric,
    discount          numeric,         -- Zoho: an amount per line
    line_net          numeric,         -- qty x price - discount, as the CRM computed it
    discount_ok       boolean,         -- 0 <= discount <= the line's gross amount
    total_ok          boolean,         -- the CRM's totals equal qty x price x (1 - discount) within 0.01
    tax_rate          numeric,
    payload_hash      text,            -- of what the ERP would receive: tells a true resend from a change
    gate_ok           boolean,
    decision          text,            -- credit check: Passed / Approved (sent) or Hold / Prepaid Only
    amount_home       numeric,
    PRIMARY KEY (batch_id, row_no)
);
-- installs from before the credit decision was kept here
ALTER TABLE bridge.stg_crm_orders_to_erp ADD COLUMN IF NOT EXISTS decision text;
ALTER TABLE bridge.stg_crm_orders_to_erp ADD COLUMN IF NOT EXISTS amount_home numeric;
ALTER TABLE bridge.stg_crm_orders_to_erp ADD COLUMN IF NOT EXISTS unreadable text;
ALTER TABLE bridge.stg_crm_orders_to_erp ADD COLUMN IF NOT EXISTS discount_ok boolean;
DO $$ BEGIN  -- a huge foreign-currency order overflowed numeric(18, 2) and failed the whole batch's credit step
    IF (SELECT numeric_precision FROM information_schema.columns WHERE table_schema = 'bridge'
          AND table_name = 'stg_crm_orders_to_erp' AND column_name = 'amount_home') IS NOT NULL THEN
        ALTER TABLE bridge.stg_crm_orders_to_erp ALTER COLUMN amount_home TYPE numeric;
    END IF;
END $$;

-- Every document sent to the ERP's inbound tables. idempotency_key = module:crm id:action:payload hash, the
-- same key the ERP inbound row carries (UNIQUE there): sending twice is a no-op on the ERP side.
CREATE TABLE IF NOT EXISTS bridge.order_outbox (
    idempotency_key   text PRIMARY KEY,
    crm_id            text NOT NULL,
    source_module     text NOT NULL,
    entity            text NOT NULL DEFAULT 'sales_order',    -- sales_order | customer
    action            text NOT NULL,                          -- CREATE | AMEND | CANCEL
    payload_hash      text NOT NULL,
    payload           jsonb NOT NULL,
    batch_id          text,
    run_id            text,
    sent_at           timestamptz,     -- committed in erp_inbound
    erp_status        text,            -- NEW / PROCESSED / ERROR of the inbound row
    erp_doc_no        text,
    erp_message       text,
    written_back_at   timestamptz,     -- the CRM record shows the ERP's answer
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS order_outbox_crm ON bridge.order_outbox (crm_id, created_at DESC);
CREATE INDEX IF NOT EXISTS order_outbox_pending ON bridge.order_outbox (sent_at) WHERE written_back_at IS NULL;

-- Staging of erp_fulfilment_to_crm: ERP status of the orders that came from the CRM.
CREATE TABLE IF NOT EXISTS bridge.stg_erp_fulfilment_to_crm (
    batch_id             text NOT NULL,
    row_no               bigint NOT NULL,
    erp_order_no         text,
    source_system        text,
    external_ref         text,
    customer_code        text,
    status               text,
    status_raw           text,
    hold_reason          text,
    ordered_qty          numeric,
    shipped_qty          numeric,
    per_delivered        numeric,
    per_billed           numeric,
    ordered_amount       numeric,
    invoiced_amount      numeric,
    paid_amount          numeric,
    last_ship_date       date,
    updated_at           timestamptz,
    known_order          boolean,
    gate_ok              boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- Staging of crm_customers_to_erp: CRM accounts marked ERP_Sync_Ready that no ERP customer is linked to yet.
CREATE TABLE IF NOT EXISTS bridge.stg_crm_customers_to_erp (
    batch_id       text NOT NULL,
    row_no         bigint NOT NULL,
    crm_id         text,
    account_name   text,
    uscc           text,
    uscc_ok        boolean,          -- empty, or 18 characters with a valid check character
    currency       text,
    region         text,
    city           text,
    phone          text,
    address        text,
    payload_hash   text,
    gate_ok        boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- CRM change notifications (watch API) waiting to wake crm_orders_to_erp; see include/bridge/crm_events.py.
-- Only a hint: the flow reads by Modified_Time anyway, so claimed rows are kept a week for diagnosis only.
CREATE TABLE IF NOT EXISTS bridge.crm_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id  text NOT NULL,
    module      text NOT NULL,
    operation   text,
    record_ids  text[] NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz
);
CREATE INDEX IF NOT EXISTS crm_event_unclaimed ON bridge.crm_event (id) WHERE claimed_at IS NULL;

-- The bridge's own CRM writes whose watch notifications will echo back (crm_orders_to_erp's write-back), noted before
-- the write: the trigger claims an echo without starting a run (a run for its own write occupied the DAG's one run
-- slot when the next order was confirmed). An unconsumed note expires; the 5-minute schedule covers any edit missed.
CREATE TABLE IF NOT EXISTS bridge.crm_echo (
    module      text NOT NULL,
    record_id   text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (module, record_id)
);
