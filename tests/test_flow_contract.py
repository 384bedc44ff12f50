"""Standard tests every flow passes (the Singer SDK's idea): run over the registry, so a new flow is checked the
day it is added. It declares what it moves; its mapping loads strictly; its suites load, every expectation is one
Great Expectations knows and names only columns the gate hands it (an expectation on a missing column would error,
not fail a row)."""

import pytest

from include.bridge.gate import EXPECTATIONS_DIR, load_suite
from include.bridge.mirror import MirrorFlow
from include.flows import FLOWS

COLUMN_KWARGS = ("column", "column_A", "column_B")
LIST_KWARGS = ("column_list", "column_set")


def expectation_class(kind: str):
    import great_expectations as gx

    return getattr(gx.expectations, "".join(part.title() for part in kind.split("_")), None)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_every_flow_declares_what_it_moves(name):
    flow = FLOWS[name]
    assert flow.name == name and flow.source and flow.target
    assert set(flow.pilot_dimensions) <= {"regions", "customers", "skus"}
    assert flow.pilot_hint or set(flow.pilot_dimensions) == {"regions", "customers", "skus"}
    suites = flow.suites
    assert name in suites or not suites, f"{name}: its main suite is expectations/{name}.json"
    if not suites:
        assert not (EXPECTATIONS_DIR / f"{name}.json").exists(), f"{name} has a suite it does not declare"


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_every_flow_has_a_mapping_and_suites_the_gate_can_evaluate(name):
    flow = FLOWS[name]
    if isinstance(flow, MirrorFlow):
        assert flow.spec.flow == name  # the mapping loads strictly: every key known, every field mapped
    for suite_name, columns in flow.suites.items():
        suite = load_suite(suite_name)
        assert suite["expectations"], f"{suite_name} has no expectations"
        seen = {"row_no", *columns}
        for e in suite["expectations"]:
            assert expectation_class(e["type"]) is not None, f"{suite_name}: {e['type']} is not a GX expectation"
            named = [e["kwargs"][k] for k in COLUMN_KWARGS if k in e["kwargs"]]
            named += [c for k in LIST_KWARGS if k in e["kwargs"] and e["type"] != "expect_table_columns_to_match_set"
                      for c in e["kwargs"][k]]
            missing = [c for c in named if c not in seen]
            assert not missing, f"{suite_name}: {e['type']} names {missing}, which the gate does not hand it"


def test_every_suite_belongs_to_a_flow():
    declared = {s for f in FLOWS.values() for s in f.suites}
    assert {p.stem for p in EXPECTATIONS_DIR.glob("*.json")} == declared


@pytest.mark.parametrize("name", sorted(n for n, f in FLOWS.items() if isinstance(f, MirrorFlow)))
def test_a_misspelled_mapping_key_is_an_error_naming_the_file_and_the_key(name):
    """Fail closed: an unknown key (a misspelled `filter`) would otherwise be ignored and change what is synced."""
    import copy

    from include.bridge.mirror import check_mapping

    good = FLOWS[name].spec.spec
    check_mapping(name, good)
    for section, key in (("source", "filtre"), ("target", "find-by"), ("settings", "load_mod"), ("", "feilds")):
        bad = copy.deepcopy(good)
        (bad if not section else bad[section])[key] = "x"
        with pytest.raises(ValueError, match=rf"{name}\.yaml.*{key}"):
            check_mapping(name, bad)


def test_a_load_mode_other_than_auto_batch_or_bulk_is_refused():
    import copy

    from include.bridge.mirror import check_mapping

    bad = copy.deepcopy(FLOWS["erp_stock_to_crm"].spec.spec)
    bad["settings"]["load_mode"] = "fast"
    with pytest.raises(ValueError, match=r"erp_stock_to_crm\.yaml: settings\.load_mode is 'fast'"):
        check_mapping("erp_stock_to_crm", bad)


def test_a_mirror_needs_no_registry_line():
    """A plain mirror is a mapping, a suite and a DAG file: every mirror mapping is a registered flow."""
    from include.bridge.mirror import mirror_mappings

    assert "erp_credit_to_crm" in mirror_mappings()
    assert set(mirror_mappings()) <= set(FLOWS)
    assert type(FLOWS["erp_credit_to_crm"]) is MirrorFlow


CONFIG_FILES = sorted(["master_data", "crm_orders_to_erp", "crm_forecast_to_erp", "reconcile_crm_erp"])


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_other_mapping_is_strict_too(name):
    """Fail closed for the mappings that are not mirrors: an unknown key or a value of the wrong type is an error
    naming the file and the key, checked at load."""
    import copy

    from include.bridge import config

    good = config.mapping(name)
    section = next(k for k, v in good.items() if isinstance(v, dict))
    bad = copy.deepcopy(good)
    bad[section]["misspeled"] = 1
    with pytest.raises(ValueError, match=rf"{name}\.yaml.*misspeled"):
        config.check(f"mapping {name}.yaml", bad, config.SCHEMAS[name])
    typed = copy.deepcopy(good)
    key = next(k for k, v in typed[section].items() if not isinstance(v, str))
    typed[section][key] = "a text"
    with pytest.raises(ValueError, match=rf"{name}\.yaml.*{key}"):
        config.check(f"mapping {name}.yaml", typed, config.SCHEMAS[name])


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPECTATIONS_DIR.glob("*.json")))
def test_every_suite_has_strict_gate_settings(name):
    import copy
    import json

    from include.bridge import config

    good = json.loads((EXPECTATIONS_DIR / f"{name}.json").read_text("utf-8"))
    load_suite(name)
    for change in ({"max_failing_shar": 0.1}, {"max_failing_share": "0.1"}):
        bad = copy.deepcopy(good)
        bad["meta"] |= change
        with pytest.raises(ValueError, match=r"max_failing_shar"):
            config.check(f"suite {name}.json", bad, config.SUITE)
