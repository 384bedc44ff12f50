"""ERP adapters: what fills the ERP contract (erp_api views, erp_inbound import job) for one real ERP."""
