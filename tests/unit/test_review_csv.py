"""The master-data review list is opened in Excel: a cell that starts like a formula is shown as text, never run."""

import csv

from include.flows.master_data_match import spreadsheet_safe

CELLS = ['=HYPERLINK("http://evil","click")', "+1-2", "-3", "@SUM(A1)", "\t=1", "\r=1", "上海华东 Co.", "", None, 7]


def test_formula_like_cells_are_neutralised_and_others_kept(tmp_path):
    assert [spreadsheet_safe(c) for c in CELLS] == [
        "'" + c if isinstance(c, str) and c else c for c in CELLS[:6]] + ["上海华东 Co.", "", None, 7]
    path = tmp_path / "r.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([spreadsheet_safe(c) for c in CELLS])
    with open(path, encoding="utf-8") as f:
        assert next(csv.reader(f))[0].startswith("'=")
