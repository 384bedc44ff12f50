-- Staging and sync state of erp_stock_to_crm (idempotent DDL).

-- One row per ERP stock row of a batch (SKU x warehouse), as read; row_no identifies it for the gate.
CREATE TABLE IF NOT EXISTS bridge.stg_erp_stock_to_crm (
    batch_id             text NOT NULL,
    row_no               bigint NOT NULL,
    sku                  text,
    warehouse            text,
    uom                  text,
    on_hand              numeric,
    reserved             numeric,
    available            numeric,
    incoming_po          numeric,
    incoming_mo          numeric,
    projected_14d        numeric,
    first_shortage_date  date,
    safety_stock         numeric,
    updated_at           timestamptz,
    known_sku            boolean,
    gate_ok              boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- What the last successful load wrote into the CRM per record: change detection and audit "before".
CREATE TABLE IF NOT EXISTS bridge.synced_state (
    flow          text NOT NULL,
    business_key  text NOT NULL,
    crm_id        text,
    values        jsonb NOT NULL,
    values_hash   text NOT NULL,
    batch_id      text,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, business_key)
);

-- The records a batch will write, split into chunks for parallel load tasks; outcome per record.
CREATE TABLE IF NOT EXISTS bridge.load_queue (
    flow          text NOT NULL,
    batch_id      text NOT NULL,
    business_key  text NOT NULL,
    chunk_no      integer NOT NULL,
    crm_id        text,
    values        jsonb NOT NULL,
    values_hash   text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'loaded', 'failed')),
    error         text,
    PRIMARY KEY (batch_id, business_key)
);
CREATE INDEX IF NOT EXISTS load_queue_chunk ON bridge.load_queue (batch_id, chunk_no, status);
