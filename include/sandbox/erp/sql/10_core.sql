-- Reference ERP sandbox: core tables (schema erp).
-- Modeled on ERPNext (Bin, Sales Order / Invoice / Payment Entry, Work Order, Material Request) and
-- Odoo (stock.quant reservations, 14-day forecast). Only the ERP itself touches this schema; the
-- integration sees it through erp_api views and writes through erp_inbound tables.
CREATE SCHEMA erp;

-- The ERP's business date: the simulator advances it one day at a time. Timestamps (updated_at)
-- stay on the real clock so incremental readers can use them as watermarks.
CREATE TABLE erp.setting (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE FUNCTION erp.today() RETURNS date LANGUAGE sql STABLE AS
$$ SELECT value::date FROM erp.setting WHERE key = 'business_date' $$;
CREATE FUNCTION erp.setting_num(p_key text, p_default numeric) RETURNS numeric LANGUAGE sql STABLE AS
$$ SELECT coalesce((SELECT value::numeric FROM erp.setting WHERE key = p_key), p_default) $$;

CREATE TABLE erp.currency (
    code    char(3) PRIMARY KEY,
    name    text NOT NULL,
    symbol  text NOT NULL,
    is_home boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX currency_one_home ON erp.currency (is_home) WHERE is_home;

CREATE TABLE erp.exchange_rate (
    currency     char(3) NOT NULL REFERENCES erp.currency,
    rate_date    date NOT NULL,
    rate_to_home numeric(18, 6) NOT NULL CHECK (rate_to_home > 0),
    PRIMARY KEY (currency, rate_date)
);

CREATE TABLE erp.uom (
    code text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE erp.tax_rate (
    code        text PRIMARY KEY,
    rate        numeric(5, 2) NOT NULL UNIQUE CHECK (rate >= 0),
    description text NOT NULL
);

CREATE TABLE erp.warehouse (
    code      text PRIMARY KEY,
    name      text NOT NULL,
    city      text NOT NULL,
    is_active boolean NOT NULL DEFAULT true
);

CREATE TABLE erp.customer_group (
    code         text PRIMARY KEY,
    name         text NOT NULL,
    credit_limit numeric(18, 2) NOT NULL DEFAULT 0   -- home currency; used when the customer has none
);

CREATE SEQUENCE erp.customer_seq;
CREATE TABLE erp.customer (
    customer_id         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    customer_code       text PRIMARY KEY,
    customer_name       text NOT NULL,
    customer_name_en    text,
    uscc                char(18) UNIQUE,               -- 统一社会信用代码, legal identity (domestic only)
    customer_group      text NOT NULL REFERENCES erp.customer_group,
    region              text NOT NULL,                 -- sales region: East, North, South, Export
    city                text,
    address             text,
    phone               text,
    currency            char(3) NOT NULL REFERENCES erp.currency,
    credit_limit        numeric(18, 2),                -- home currency; NULL = take the group's
    bypass_credit_check boolean NOT NULL DEFAULT false,
    manual_hold         boolean NOT NULL DEFAULT false,
    payment_terms_days  integer NOT NULL DEFAULT 30 CHECK (payment_terms_days >= 0),
    is_active           boolean NOT NULL DEFAULT true,
    source_system       text,                          -- set when created through erp_inbound
    source_id           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_system, source_id)
);
CREATE INDEX customer_updated_at ON erp.customer (updated_at);

CREATE TABLE erp.supplier (
    supplier_code text PRIMARY KEY,
    supplier_name text NOT NULL
);

CREATE TABLE erp.item (
    item_id         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    sku             text PRIMARY KEY,
    item_name       text NOT NULL,
    item_group      text NOT NULL,
    stock_uom       text NOT NULL REFERENCES erp.uom,
    tax_rate_code   text NOT NULL REFERENCES erp.tax_rate,
    is_stock_item   boolean NOT NULL DEFAULT true,
    is_manufactured boolean NOT NULL DEFAULT false,
    lead_time_days  integer NOT NULL DEFAULT 7,
    weekly_capacity numeric(18, 3),                    -- manufactured items: units per week
    default_supplier text REFERENCES erp.supplier,
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX item_updated_at ON erp.item (updated_at);

-- 1 <uom> = factor x stock_uom (e.g. 1 BOX = 12 PCS).
CREATE TABLE erp.uom_conversion (
    sku    text NOT NULL REFERENCES erp.item,
    uom    text NOT NULL REFERENCES erp.uom,
    factor numeric(18, 6) NOT NULL CHECK (factor > 0),
    PRIMARY KEY (sku, uom)
);

CREATE TABLE erp.bom (
    bom_no    text PRIMARY KEY,
    sku       text NOT NULL UNIQUE REFERENCES erp.item,
    qty       numeric(18, 3) NOT NULL DEFAULT 1
);
CREATE TABLE erp.bom_item (
    bom_no        text NOT NULL REFERENCES erp.bom,
    component_sku text NOT NULL REFERENCES erp.item,
    qty           numeric(18, 3) NOT NULL CHECK (qty > 0),
    PRIMARY KEY (bom_no, component_sku)
);

-- Stock per item x warehouse, the ERPNext Bin: kept current by every stock-moving transaction via
-- erp.refresh_bins(). updated_at moves only when a figure the integration reads actually changed.
CREATE TABLE erp.bin (
    sku            text NOT NULL REFERENCES erp.item,
    warehouse      text NOT NULL REFERENCES erp.warehouse,
    actual_qty     numeric(18, 3) NOT NULL DEFAULT 0,   -- on hand
    reserved_qty   numeric(18, 3) NOT NULL DEFAULT 0,   -- allocated to open sales-order lines
    ordered_qty    numeric(18, 3) NOT NULL DEFAULT 0,   -- open purchase orders
    planned_qty    numeric(18, 3) NOT NULL DEFAULT 0,   -- open production orders
    safety_stock   numeric(18, 3) NOT NULL DEFAULT 0,
    projected_14d  numeric(18, 3) NOT NULL DEFAULT 0,   -- minimum projected available, days 0..13
    shortage_date  date,                                -- first day 0..13 projected below zero
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, warehouse)
);

CREATE SEQUENCE erp.so_seq;
CREATE TABLE erp.sales_order (
    so_no          text PRIMARY KEY,
    customer_code  text NOT NULL REFERENCES erp.customer,
    order_date     date NOT NULL,
    delivery_date  date NOT NULL,
    currency       char(3) NOT NULL REFERENCES erp.currency,
    exchange_rate  numeric(18, 6) NOT NULL CHECK (exchange_rate > 0),
    -- ERPNext statuses, kept raw; erp_api normalizes them.
    status         text NOT NULL CHECK (status IN ('Draft', 'On Hold', 'To Deliver and Bill', 'To Bill',
                                                   'To Deliver', 'Completed', 'Cancelled', 'Closed')),
    hold_reason    text CHECK (hold_reason IN ('LIMIT_EXCEEDED', 'OVERDUE', 'MANUAL')),
    is_prepaid     boolean NOT NULL DEFAULT false,
    credit_override_by text,                          -- who released a credit hold
    customer_po_no text,                               -- the customer's PO reference (ERPNext po_no)
    source_system  text NOT NULL DEFAULT 'ERP',
    source_id      text,                               -- external reference: the CRM order id
    payload_hash   text,                               -- tells a true resend from a changed document
    net_total      numeric(18, 2) NOT NULL DEFAULT 0,
    tax_total      numeric(18, 2) NOT NULL DEFAULT 0,
    grand_total    numeric(18, 2) NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_system, source_id)
);
CREATE INDEX sales_order_customer ON erp.sales_order (customer_code);
CREATE INDEX sales_order_updated_at ON erp.sales_order (updated_at);
CREATE INDEX sales_order_open ON erp.sales_order (status) WHERE status NOT IN ('Completed', 'Cancelled', 'Closed');

CREATE TABLE erp.sales_order_line (
    so_no         text NOT NULL REFERENCES erp.sales_order,
    line_no       integer NOT NULL,
    sku           text NOT NULL REFERENCES erp.item,
    warehouse     text NOT NULL REFERENCES erp.warehouse,
    qty           numeric(18, 3) NOT NULL CHECK (qty > 0),      -- in stock uom
    uom           text NOT NULL REFERENCES erp.uom,              -- uom the customer ordered in
    uom_factor    numeric(18, 6) NOT NULL DEFAULT 1,
    unit_price    numeric(18, 4) NOT NULL CHECK (unit_price >= 0),  -- per stock uom, excl. tax
    discount_pct  numeric(5, 2) NOT NULL DEFAULT 0 CHECK (discount_pct BETWEEN 0 AND 100),
    tax_rate      numeric(5, 2) NOT NULL,
    net_amount    numeric(18, 2) NOT NULL,
    delivery_date date NOT NULL,
    reserved_qty  numeric(18, 3) NOT NULL DEFAULT 0 CHECK (reserved_qty >= 0),
    delivered_qty numeric(18, 3) NOT NULL DEFAULT 0,
    billed_qty    numeric(18, 3) NOT NULL DEFAULT 0,
    PRIMARY KEY (so_no, line_no)
);
CREATE INDEX sales_order_line_bin ON erp.sales_order_line (sku, warehouse);
CREATE INDEX bin_updated_at ON erp.bin (updated_at);  -- incremental reads of stock_availability

CREATE SEQUENCE erp.dn_seq;
CREATE TABLE erp.delivery_note (
    dn_no     text PRIMARY KEY,
    so_no     text NOT NULL REFERENCES erp.sales_order,
    ship_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_note_so ON erp.delivery_note (so_no);
CREATE TABLE erp.delivery_note_line (
    dn_no     text NOT NULL REFERENCES erp.delivery_note,
    so_no     text NOT NULL,
    line_no   integer NOT NULL,
    sku       text NOT NULL REFERENCES erp.item,
    warehouse text NOT NULL REFERENCES erp.warehouse,
    qty       numeric(18, 3) NOT NULL CHECK (qty > 0),
    PRIMARY KEY (dn_no, line_no),
    FOREIGN KEY (so_no, line_no) REFERENCES erp.sales_order_line
);

CREATE SEQUENCE erp.inv_seq;
CREATE TABLE erp.sales_invoice (
    invoice_no         text PRIMARY KEY,
    customer_code      text NOT NULL REFERENCES erp.customer,
    so_no              text REFERENCES erp.sales_order,
    invoice_date       date NOT NULL,
    due_date           date NOT NULL,
    currency           char(3) NOT NULL REFERENCES erp.currency,
    exchange_rate      numeric(18, 6) NOT NULL CHECK (exchange_rate > 0),
    net_amount         numeric(18, 2) NOT NULL,
    tax_amount         numeric(18, 2) NOT NULL,
    grand_total        numeric(18, 2) NOT NULL,
    outstanding_amount numeric(18, 2) NOT NULL,
    status             text NOT NULL CHECK (status IN ('Draft', 'Unpaid', 'Partly Paid', 'Paid', 'Overdue',
                                                       'Cancelled', 'Return', 'Credit Note Issued')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (outstanding_amount >= 0 AND outstanding_amount <= grand_total)
);
CREATE INDEX sales_invoice_customer ON erp.sales_invoice (customer_code);
CREATE INDEX sales_invoice_so ON erp.sales_invoice (so_no);
CREATE INDEX sales_invoice_updated_at ON erp.sales_invoice (updated_at);
CREATE INDEX sales_invoice_open ON erp.sales_invoice (due_date) WHERE outstanding_amount > 0;
-- what each invoice bills: the shipped, not yet billed quantity of its order's lines (ERPNext Sales Invoice Item)
CREATE TABLE erp.sales_invoice_line (
    invoice_no   text NOT NULL REFERENCES erp.sales_invoice ON DELETE CASCADE,
    line_no      integer NOT NULL,
    so_no        text NOT NULL,
    so_line_no   integer NOT NULL,
    sku          text NOT NULL REFERENCES erp.item,
    qty          numeric(18, 3) NOT NULL CHECK (qty > 0),      -- in stock uom
    unit_price   numeric(18, 4) NOT NULL,                      -- per stock uom, excl. tax
    discount_pct numeric(5, 2) NOT NULL DEFAULT 0,
    tax_rate     numeric(5, 2) NOT NULL,
    net_amount   numeric(18, 2) NOT NULL,
    PRIMARY KEY (invoice_no, line_no),
    FOREIGN KEY (so_no, so_line_no) REFERENCES erp.sales_order_line
);

CREATE SEQUENCE erp.pay_seq;
CREATE TABLE erp.payment_entry (
    payment_no    text PRIMARY KEY,
    customer_code text NOT NULL REFERENCES erp.customer,
    invoice_no    text NOT NULL REFERENCES erp.sales_invoice,
    payment_date  date NOT NULL,
    amount        numeric(18, 2) NOT NULL CHECK (amount > 0),  -- invoice currency
    currency      char(3) NOT NULL REFERENCES erp.currency,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_entry_customer ON erp.payment_entry (customer_code);
CREATE INDEX payment_entry_invoice ON erp.payment_entry (invoice_no);

CREATE SEQUENCE erp.mr_seq;
CREATE TABLE erp.material_request (
    mr_no        text PRIMARY KEY,
    sku          text NOT NULL REFERENCES erp.item,
    warehouse    text NOT NULL REFERENCES erp.warehouse,
    qty          numeric(18, 3) NOT NULL CHECK (qty > 0),
    request_type text NOT NULL CHECK (request_type IN ('Purchase', 'Manufacture')),
    reason       text NOT NULL CHECK (reason IN ('SO_SHORTAGE', 'REORDER', 'FORECAST')),
    so_no        text REFERENCES erp.sales_order,
    forecast_version text,                          -- reason FORECAST: the forecast version planned
    required_by  date NOT NULL,
    status       text NOT NULL DEFAULT 'Pending' CHECK (status IN ('Pending', 'Ordered', 'Cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX material_request_pending ON erp.material_request (sku) WHERE status = 'Pending';

CREATE SEQUENCE erp.po_seq;
CREATE TABLE erp.purchase_order (
    po_no         text PRIMARY KEY,
    supplier_code text NOT NULL REFERENCES erp.supplier,
    order_date    date NOT NULL,
    status        text NOT NULL CHECK (status IN ('To Receive', 'Completed', 'Cancelled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE erp.purchase_order_line (
    po_no         text NOT NULL REFERENCES erp.purchase_order,
    line_no       integer NOT NULL,
    sku           text NOT NULL REFERENCES erp.item,
    warehouse     text NOT NULL REFERENCES erp.warehouse,
    qty           numeric(18, 3) NOT NULL CHECK (qty > 0),
    received_qty  numeric(18, 3) NOT NULL DEFAULT 0,
    expected_date date NOT NULL,
    mr_no         text REFERENCES erp.material_request,
    PRIMARY KEY (po_no, line_no)
);
CREATE INDEX purchase_order_line_bin ON erp.purchase_order_line (sku, warehouse);
CREATE INDEX purchase_order_line_open ON erp.purchase_order_line (expected_date) WHERE received_qty < qty;

CREATE SEQUENCE erp.mo_seq;
CREATE TABLE erp.production_order (
    mo_no                   text PRIMARY KEY,
    sku                     text NOT NULL REFERENCES erp.item,
    warehouse               text NOT NULL REFERENCES erp.warehouse,
    qty                     numeric(18, 3) NOT NULL CHECK (qty > 0),
    produced_qty            numeric(18, 3) NOT NULL DEFAULT 0,
    planned_start           date NOT NULL,
    planned_finish          date NOT NULL,
    original_planned_finish date NOT NULL,             -- first promise; planned_finish later = a slip
    actual_start            date,
    actual_finish           date,
    status                  text NOT NULL CHECK (status IN ('Not Started', 'In Process', 'Completed',
                                                            'Stopped', 'Cancelled')),
    material_status         text NOT NULL DEFAULT 'AVAILABLE' CHECK (material_status IN ('AVAILABLE', 'PARTIAL', 'SHORT')),
    material_due_date       date,                      -- when the last short material arrives
    so_no                   text REFERENCES erp.sales_order,
    mr_no                   text REFERENCES erp.material_request,
    forecast_version        text,                      -- planned from this demand-forecast version
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX production_order_bin ON erp.production_order (sku, warehouse);
CREATE INDEX production_order_so ON erp.production_order (so_no);
CREATE INDEX production_order_updated_at ON erp.production_order (updated_at);

CREATE TABLE erp.item_price (
    price_list   text NOT NULL,
    sku          text NOT NULL REFERENCES erp.item,
    uom          text NOT NULL REFERENCES erp.uom,
    currency     char(3) NOT NULL REFERENCES erp.currency,
    unit_price   numeric(18, 4) NOT NULL CHECK (unit_price >= 0),
    tax_included boolean NOT NULL DEFAULT false,     -- Kingdee FTaxPrice vs FPrice
    min_qty      numeric(18, 3) NOT NULL DEFAULT 1,
    valid_from   date NOT NULL,
    valid_to     date,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (price_list, sku, currency)
);
CREATE INDEX item_price_updated_at ON erp.item_price (updated_at);

-- Demand forecast received from the CRM: one active version per horizon, replaced as a whole.
CREATE SEQUENCE erp.fc_seq;
CREATE TABLE erp.forecast_version (
    version_no    text PRIMARY KEY,
    source_system text NOT NULL,
    batch_id      text NOT NULL,
    horizon_start date NOT NULL,
    horizon_end   date NOT NULL,
    status        text NOT NULL CHECK (status IN ('Active', 'Superseded')),
    row_count     integer NOT NULL,
    total_qty     numeric(18, 3) NOT NULL,
    production_orders_planned integer NOT NULL DEFAULT 0,   -- what planning this version created
    purchase_requests_raised  integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_system, batch_id)
);
CREATE TABLE erp.demand_forecast (
    version_no   text NOT NULL REFERENCES erp.forecast_version,
    sku          text NOT NULL REFERENCES erp.item,
    region       text NOT NULL,
    warehouse    text REFERENCES erp.warehouse,
    period_start date NOT NULL,
    demand_type  text NOT NULL DEFAULT 'PIPELINE' CHECK (demand_type IN ('PIPELINE', 'ORDERS')),
    qty          numeric(18, 3) NOT NULL CHECK (qty >= 0)
);
CREATE INDEX demand_forecast_version ON erp.demand_forecast (version_no);

-- Credit and AR per customer, the figures the credit check and erp_api.customer_credit use.
-- Maintained by erp.refresh_customer_credit() after each transaction and each business day.
CREATE TABLE erp.customer_credit_summary (
    customer_code     text PRIMARY KEY REFERENCES erp.customer,
    credit_limit      numeric(18, 2) NOT NULL,
    open_ar           numeric(18, 2) NOT NULL,
    open_orders       numeric(18, 2) NOT NULL,
    overdue_amount    numeric(18, 2) NOT NULL,
    max_overdue_days  integer NOT NULL,
    ar_0_30           numeric(18, 2) NOT NULL,
    ar_31_60          numeric(18, 2) NOT NULL,
    ar_61_90          numeric(18, 2) NOT NULL,
    ar_90_plus        numeric(18, 2) NOT NULL,
    ytd_sales         numeric(18, 2) NOT NULL,
    mtd_sales         numeric(18, 2) NOT NULL,
    last_payment_date date,
    hold_reason       text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_credit_summary_updated_at ON erp.customer_credit_summary (updated_at);

-- Deletion log: documents removed (not cancelled) leave a tombstone, so integrations can follow deletions
-- incrementally (like ERPNext's "Deleted Document" doctype).
CREATE TABLE erp.deleted_document (
    doc_type    text NOT NULL,                 -- SALES_ORDER, SALES_INVOICE
    doc_no      text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_type, doc_no, deleted_at)
);
CREATE INDEX deleted_document_at ON erp.deleted_document (deleted_at);
