-- The exchange database of the CSV drop folder: what the bridge's flows see when the ERP exchanges files.
-- erp_api: the contract's read views as tables (same columns and types), filled from the ERP's export files;
-- the unique key of each is how a delta file's rows replace earlier ones. erp_inbound: the contract's own file
-- (include/sandbox/erp/sql/40_inbound.sql), installed beside this one. erp_files: the adapter's ledger.
CREATE SCHEMA erp_api;
CREATE SCHEMA erp_files;

CREATE TABLE erp_api.currencies (
    code         character(3) NOT NULL,
    name         text,
    is_home      boolean,
    rate_to_home numeric(18,6),
    rate_date    date,
    UNIQUE NULLS NOT DISTINCT (code)
);
CREATE TABLE erp_api.customer_credit (
    customer_code       text NOT NULL,
    currency            character(3),
    customer_currency   character(3),
    credit_limit        numeric(18,2),
    open_ar             numeric(18,2),
    open_orders         numeric(18,2),
    credit_used         numeric,
    credit_available    numeric,
    overdue_amount      numeric(18,2),
    max_overdue_days    integer,
    ar_0_30             numeric(18,2),
    ar_31_60            numeric(18,2),
    ar_61_90            numeric(18,2),
    ar_90_plus          numeric(18,2),
    ytd_sales           numeric(18,2),
    mtd_sales           numeric(18,2),
    last_payment_date   date,
    credit_hold         boolean,
    hold_reason         text,
    bypass_credit_check boolean,
    updated_at          timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (customer_code)
);
CREATE TABLE erp_api.customers (
    customer_code      text NOT NULL,
    customer_name      text,
    customer_name_en   text,
    uscc               character(18),
    customer_group     text,
    region             text,
    city               text,
    address            text,
    phone              text,
    currency           character(3),
    payment_terms_days integer,
    is_active          boolean,
    source_system      text,
    source_id          text,
    created_at         timestamp with time zone,
    updated_at         timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (customer_code)
);
CREATE TABLE erp_api.deleted_documents (
    doc_type   text NOT NULL,
    doc_no     text NOT NULL,
    deleted_at timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (doc_type, doc_no)
);
CREATE TABLE erp_api.demand_forecast (
    version_no    text NOT NULL,
    source_system text,
    batch_id      text,
    horizon_start date,
    horizon_end   date,
    sku           text NOT NULL,
    region        text,
    warehouse     text,
    period_start  date NOT NULL,
    demand_type   text NOT NULL,
    qty           numeric(18,3),
    updated_at    timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (version_no, sku, region, warehouse, period_start, demand_type)
);
CREATE TABLE erp_api.forecast_versions (
    version_no                text NOT NULL,
    source_system             text,
    batch_id                  text,
    horizon_start             date,
    horizon_end               date,
    status                    text,
    row_count                 integer,
    total_qty                 numeric(18,3),
    production_orders_planned integer,
    purchase_requests_raised  integer,
    created_at                timestamp with time zone,
    updated_at                timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (version_no)
);
CREATE TABLE erp_api.invoice_lines (
    invoice_no   text NOT NULL,
    line_no      integer NOT NULL,
    sku          text,
    qty          numeric(18,3),
    uom          text,
    unit_price   numeric(18,4),
    discount_pct numeric(5,2),
    tax_rate     numeric(5,2),
    net_amount   numeric(18,2),
    updated_at   timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (invoice_no, line_no)
);
CREATE TABLE erp_api.invoices (
    invoice_no       text NOT NULL,
    customer_code    text,
    sales_order_no   text,
    external_ref     text,
    invoice_date     date,
    due_date         date,
    currency         character(3),
    exchange_rate    numeric(18,6),
    net_amount       numeric(18,2),
    tax_amount       numeric(18,2),
    amount           numeric(18,2),
    outstanding      numeric(18,2),
    paid_amount      numeric,
    amount_home      numeric,
    outstanding_home numeric,
    status           text,
    status_raw       text,
    updated_at       timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (invoice_no)
);
CREATE TABLE erp_api.item_uom (
    sku                 text NOT NULL,
    uom                 text NOT NULL,
    factor_to_stock_uom numeric(18,6),
    UNIQUE NULLS NOT DISTINCT (sku, uom)
);
CREATE TABLE erp_api.items (
    sku             text NOT NULL,
    item_name       text,
    item_group      text,
    uom             text,
    tax_rate        numeric(5,2),
    is_stock_item   boolean,
    is_manufactured boolean,
    lead_time_days  integer,
    weekly_capacity numeric(18,3),
    is_active       boolean,
    updated_at      timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (sku)
);
CREATE TABLE erp_api.price_list (
    sku                 text NOT NULL,
    price_list          text NOT NULL,
    uom                 text,
    currency            character(3) NOT NULL,
    unit_price          numeric(18,4),
    tax_rate            numeric(5,2),
    tax_included        boolean,
    unit_price_excl_tax numeric,
    unit_price_incl_tax numeric,
    min_qty             numeric(18,3),
    valid_from          date,
    valid_to            date,
    updated_at          timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (sku, price_list, uom, currency, min_qty, valid_from)
);
CREATE TABLE erp_api.production_schedule (
    mo_no                   text NOT NULL,
    sku                     text,
    warehouse               text,
    qty                     numeric(18,3),
    produced_qty            numeric(18,3),
    planned_start           date,
    planned_finish          date,
    original_planned_finish date,
    slip_days               integer,
    actual_start            date,
    actual_finish           date,
    status                  text,
    status_raw              text,
    material_status         text,
    material_due_date       date,
    erp_order_no            text,
    external_ref            text,
    demand_source           text,
    forecast_version        text,
    updated_at              timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (mo_no)
);
CREATE TABLE erp_api.sales_order_lines (
    erp_order_no  text NOT NULL,
    external_ref  text,
    line_no       integer NOT NULL,
    sku           text,
    warehouse     text,
    qty           numeric(18,3),
    uom           text,
    unit_price    numeric(18,4),
    discount_pct  numeric(5,2),
    tax_rate      numeric(5,2),
    net_amount    numeric(18,2),
    delivery_date date,
    reserved_qty  numeric(18,3),
    shipped_qty   numeric(18,3),
    invoiced_qty  numeric(18,3),
    shortage_qty  numeric,
    updated_at    timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (erp_order_no, line_no)
);
CREATE TABLE erp_api.sales_order_status (
    erp_order_no        text NOT NULL,
    source_system       text,
    external_ref        text,
    customer_po_no      text,
    customer_code       text,
    order_date          date,
    delivery_date       date,
    currency            character(3),
    exchange_rate       numeric(18,6),
    status              text,
    status_raw          text,
    hold_reason         text,
    is_prepaid          boolean,
    ordered_qty         numeric,
    reserved_qty        numeric,
    shipped_qty         numeric,
    invoiced_qty        numeric,
    shortage_qty        numeric,
    per_delivered       numeric,
    per_billed          numeric,
    ordered_amount      numeric(18,2),
    shipped_amount      numeric,
    invoiced_amount     numeric,
    paid_amount         numeric,
    ordered_amount_home numeric,
    last_ship_date      date,
    updated_at          timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (erp_order_no)
);
CREATE TABLE erp_api.stock_availability (
    sku                 text NOT NULL,
    warehouse           text NOT NULL,
    uom                 text,
    on_hand             numeric(18,3),
    reserved            numeric(18,3),
    available           numeric,
    incoming_po         numeric(18,3),
    incoming_mo         numeric(18,3),
    projected_14d       numeric(18,3),
    first_shortage_date date,
    safety_stock        numeric(18,3),
    below_safety_stock  boolean,
    updated_at          timestamp with time zone,
    UNIQUE NULLS NOT DISTINCT (sku, warehouse)
);
CREATE TABLE erp_api.tax_rates (
    code        text NOT NULL,
    rate        numeric(5,2),
    description text,
    UNIQUE NULLS NOT DISTINCT (code)
);
CREATE TABLE erp_api.warehouses (
    code      text NOT NULL,
    name      text,
    city      text,
    is_active boolean,
    UNIQUE NULLS NOT DISTINCT (code)
);

-- the ERP's posting date, when its export says; else the calendar's
CREATE TABLE erp_files.business_date (
    today date NOT NULL,
    UNIQUE (today)
);
CREATE VIEW erp_api.business_date AS
    SELECT coalesce((SELECT max(today) FROM erp_files.business_date), current_date) AS today;

-- outbound: which inbound rows went in which batch; a batch is claimed (writing) before its files are written,
-- so a crash in between rewrites the same files under the same names, never a second batch of the same rows
CREATE SEQUENCE erp_files.batch_no;
CREATE TABLE erp_files.outbound_batch (
    batch      text PRIMARY KEY,
    flow       text NOT NULL,
    status     text NOT NULL DEFAULT 'writing' CHECK (status IN ('writing', 'written')),
    row_count  integer NOT NULL,
    manifest   jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    written_at timestamptz
);
CREATE TABLE erp_files.outbound_row (
    table_name text NOT NULL,
    row_id     bigint NOT NULL,
    batch      text NOT NULL REFERENCES erp_files.outbound_batch,
    PRIMARY KEY (table_name, row_id)
);
CREATE INDEX outbound_row_batch ON erp_files.outbound_row (batch);

-- inbound: every export file loaded, by content hash: a file delivered again is recognised and skipped
CREATE TABLE erp_files.inbound_file (
    sha256           text PRIMARY KEY,
    file_name        text NOT NULL,
    manifest         text NOT NULL,
    table_name       text NOT NULL,
    rows_loaded      integer NOT NULL,
    rows_quarantined integer NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now()
);
