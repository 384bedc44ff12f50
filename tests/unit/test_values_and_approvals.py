"""Reading what people typed into the CRM (include/bridge/values.py) and attributing credit approvals
(include/bridge/approvals.py): pure functions, every hostile shape a value can take."""

import datetime as dt
from decimal import Decimal

import pytest

from include.bridge import approvals, values


@pytest.mark.parametrize("raw, expected, why", [
    (5, Decimal(5), None), (2.5, Decimal("2.5"), None), (" 7.25 ", Decimal("7.25"), None), (None, None, None),
    ("", None, None), ("abc", None, "is not a number"), (float("nan"), None, "not a finite number"),
    (float("inf"), None, "not a finite number"), ("-Infinity", None, "not a finite number"),
    ("1e999", None, "out of range"), (True, None, "is not a number"), ({"x": 1}, None, "is not a number"),
])
def test_a_number_is_finite_and_sane_or_named_as_unreadable(raw, expected, why):
    bad: list[str] = []
    assert values.number(raw, "Quantity", bad) == expected
    assert (why is None and not bad) or (len(bad) == 1 and why in bad[0] and bad[0].startswith("Quantity"))


def test_what_a_reason_shows_of_a_bad_value_is_short():
    bad: list[str] = []
    values.number("x" * 5000, "Quantity", bad)
    assert len(bad[0]) < 80


def test_dates_lookups_sequence_numbers_texts_and_checkboxes():
    bad: list[str] = []
    assert values.day("2026-12-05", "Due_Date", bad) == dt.date(2026, 12, 5)
    assert values.day("2026-12-05T10:00:00+08:00", "Due_Date", bad) == dt.date(2026, 12, 5)
    assert values.day("2026-13-45", "Due_Date", bad) is None and "is not a date" in bad[0]
    assert values.ref({"id": "123", "name": "x"}) == "123" and values.ref("ACME") is None
    assert values.ref({"id": {"nested": 1}}) is None and values.ref({"id": True}) is None
    assert [values.whole(v) for v in (3, "4", "1.5", -1, 2**40, None)] == [3, 4, None, None, None, None]
    assert values.text("a") == "a" and values.text(12) == "12" and values.text({"a": 1}) is None
    assert values.flag(True) and not values.flag("false") and not values.flag(1)
    assert values.items([{"a": 1}, "junk", None]) == [{"a": 1}] and values.items("junk") == []


def test_the_approver_list_fails_closed():
    assert approvals.parse_approvers('["5843104000000424021", 42]').ids == {"5843104000000424021", "42"}
    for text in (None, "", "nope", '{"a": 1}', '["abc"]', '[["1"]]'):
        parsed = approvals.parse_approvers(text)
        assert not parsed.ids and parsed.problem


def test_who_approved_is_the_latest_change_of_credit_check_to_approved():
    timeline = [  # newest first, as the CRM returns it
        {"done_by": {"id": "2", "name": "bridge"}, "field_history": [
            {"api_name": "Integration_Message", "_value": {"new": "x", "old": None}}]},
        {"done_by": {"id": "11", "name": "王小明"}, "field_history": [
            {"api_name": "Credit_Check", "_value": {"new": "Approved", "old": "Hold"}}]},
        {"done_by": {"id": "21", "name": "李会计"}, "field_history": [
            {"api_name": "Credit_Check", "_value": {"new": "Approved", "old": "Hold"}}]},
    ]
    assert approvals.who_approved(timeline) == {"id": "11", "name": "王小明"}
    assert approvals.who_approved([{"field_history": "junk"}, {"done_by": "x", "field_history": [
        {"api_name": "Credit_Check", "_value": {"new": "Approved"}}]}]) == {}
    assert approvals.who_approved([]) is None


class FakeCrm:  # a unit test of one function: the timeline the CRM would answer
    def __init__(self, entries=None, error=None):
        self.entries, self.error = entries or [], error

    def timeline(self, module, record_id):
        if self.error:
            raise self.error
        return iter(self.entries)


def test_an_approval_counts_only_for_an_approver_and_never_when_it_cannot_be_attributed():
    approvers = approvals.parse_approvers('["21"]')
    by = {"done_by": {"id": "21", "name": "李会计"},
          "field_history": [{"api_name": "Credit_Check", "_value": {"new": "Approved"}}]}
    ok = approvals.check(FakeCrm([by]), "Sales_Orders", "1", approvers)
    assert ok.valid and ok.approver == "李会计 (21)"
    other = approvals.check(FakeCrm([by | {"done_by": {"id": "11", "name": "王小明"}}]), "Sales_Orders", "1",
                            approvers)
    assert not other.valid and "王小明 (11), who is not a credit approver" in other.reason
    assert "no record of who" in approvals.check(FakeCrm([]), "Sales_Orders", "1", approvers).reason
    assert "cannot be read" in approvals.check(FakeCrm(error=OSError()), "Sales_Orders", "1", approvers).reason
    assert not approvals.check(FakeCrm([by]), "Sales_Orders", "1", approvals.parse_approvers(None)).valid
