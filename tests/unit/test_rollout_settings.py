"""The rollout Variable is configuration people type: a value of the wrong type is an error that names the flow and
the key, never a silent "on" (fail closed)."""

import pytest

from include.bridge.rollout import resolve


@pytest.mark.parametrize("entry, key", [
    ({"enabled": "false"}, "enabled"),          # a string: "false" is truthy, the flow would stay ON
    ({"dry_run": "yes"}, "dry_run"),
    ({"enabled": 0}, "enabled"),
    ({"pilot": {"regions": "East"}}, "regions"),  # a string where a list belongs would be split into characters
    ({"pilot": {"customers": ["C001", 7]}}, "customers"),
    ({"pilot": ["East"]}, "pilot"),
])
def test_a_wrong_type_is_an_error_naming_the_flow_and_the_key(entry, key):
    with pytest.raises(ValueError, match=rf"bridge_rollout.*erp_credit_to_crm.*{key}"):
        resolve("erp_credit_to_crm", variable={"erp_credit_to_crm": entry})


def test_wrong_params_are_errors_too():
    with pytest.raises(ValueError, match="pilot_regions"):
        resolve("erp_credit_to_crm", params={"pilot_regions": "East"})


def test_well_typed_settings_resolve():
    plan = resolve("erp_credit_to_crm", variable={"*": {"enabled": True}, "erp_credit_to_crm": {
        "dry_run": True, "pilot": {"regions": ["East"]}}})
    assert plan.enabled and plan.dry_run and plan.regions == ["East"]
    assert not resolve("erp_credit_to_crm", variable='{"erp_credit_to_crm": {"enabled": false}}').enabled
