"""Standard tests every flow passes (the Singer SDK's idea): run over the registry, so a new flow is checked the
day it is added. Its mapping loads strictly, its suite loads, every expectation is one Great Expectations knows
and names only columns the gate hands it (an expectation on a missing column would error, not fail a row), and a
flow on the Flow / Run contract declares what it moves."""

import pytest

from include.bridge import mirror
from include.bridge.flow import Flow
from include.bridge.gate import EXPECTATIONS_DIR, load_suite
from include.flows import FLOWS

# flows with no gate of their own, and why
UNGATED = {"master_data_match": "it links records (id_map) and lists doubtful ones for review; it loads nothing"}
COLUMN_KWARGS = ("column", "column_A", "column_B")
LIST_KWARGS = ("column_list", "column_set")


def suites_of(name: str) -> dict[str, list[str]]:
    """Suite name -> the columns its gate sees (besides row_no)."""
    module = FLOWS[name]
    if hasattr(module, "COLUMNS"):
        gated = list(getattr(module, "GATED", module.COLUMNS))
    else:
        gated = mirror.load(name).gated_columns
    suites = {name: gated}
    if hasattr(module, "BUCKET_COLUMNS"):
        suites[f"{name}.totals"] = list(module.BUCKET_COLUMNS)
    return suites


def expectation_class(kind: str):
    import great_expectations as gx

    return getattr(gx.expectations, "".join(part.title() for part in kind.split("_")), None)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_every_flow_has_a_mapping_and_a_suite_the_gate_can_evaluate(name):
    if name in UNGATED:
        assert not (EXPECTATIONS_DIR / f"{name}.json").exists(), f"{name} has a suite: take it out of UNGATED"
        return
    if not hasattr(FLOWS[name], "COLUMNS"):
        mirror.load(name)  # a mirror's mapping: strict keys, every field mapped
    for suite_name, columns in suites_of(name).items():
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


@pytest.mark.parametrize("name", sorted(n for n, m in FLOWS.items() if any(
    isinstance(v, Flow) for v in vars(m).values())))
def test_a_flow_on_the_contract_declares_what_it_moves(name):
    [flow] = {id(v): v for v in vars(FLOWS[name]).values() if isinstance(v, Flow)}.values()
    assert flow.name == name and flow.source and flow.target
    assert set(flow.pilot_dimensions) <= {"regions", "customers", "skus"}
    assert flow.pilot_hint or set(flow.pilot_dimensions) == {"regions", "customers", "skus"}
    if name not in UNGATED:
        assert (EXPECTATIONS_DIR / f"{name}.json").exists(), f"{flow.suite} is missing"
