"""The CRM sandbox's rolling day of API credits (Zoho's 24-hour window), kept as a running total."""

from include.sandbox.crm.state import CreditWindow


def test_credits_leave_the_window_after_24_hours_and_the_total_follows():
    window = CreditWindow()
    window.add(1_000.0, 3)
    window.add(50_000.0, 2)
    assert window.used(50_000.0) == 5
    assert window.used(1_000.0 + 86_400 + 1) == 2  # the first charge is more than a day old
    window.clear()
    assert window.used() == 0
