"""The CSV drop folder: the ERP contract for ERPs that exchange files, not tables (older Yonyou U8 / Kingdee
installs, "CSV export every night" setups).

The bridge's flows stay as they are: they read `erp_api` and insert into `erp_inbound` of an *exchange database*
(sql/exchange.sql: the contract's views as tables, its inbound tables unchanged). This adapter moves that
database's rows through a folder, local or SFTP (folders.py), in the format of fileformat.py:
- send (outbound.py): new inbound documents become one CSV file per table and batch, plus a manifest (rows,
  bytes, sha256), written atomically (.tmp, fsync, rename), in the encoding the ERP reads (GB18030 / GBK /
  UTF-8 with BOM);
- receive (inbound.py): the ERP's export files (stock, credit, order status, the answers to our documents, ...)
  load into the exchange database, a manifest at a time in one transaction; half-written files wait, files
  already loaded (same sha256) are skipped, malformed lines are quarantined with file name and line number, what
  was read is archived.
What crosses the folder is data (files.yaml, strict). docs/erp-contract.md "CSV drop folder" is the operator's
view.
"""
