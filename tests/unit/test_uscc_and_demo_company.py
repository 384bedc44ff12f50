import pytest

from include.bridge.uscc import check_char, is_valid_uscc
from include.sandbox import demo_company


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110000600037341L"])  # published real codes
def test_real_codes_validate(code):
    assert is_valid_uscc(code)
    assert is_valid_uscc(code.lower())


@pytest.mark.parametrize("code", [None, "", "91350100M000100Y4", "91350100M000100Y44", "91350100M0001O0Y43",
                                  "91350100M000100Y431"])
def test_bad_codes_fail(code):
    assert not is_valid_uscc(code)


def test_check_char_detects_single_typos():
    code = "91350100M000100Y43"
    for i in range(17):
        for c in "0123456789":
            if c != code[i]:
                typo = code[:i] + c + code[i + 1:]
                assert check_char(typo[:17]) != code[17] or typo == code


def test_demo_company_is_deterministic_and_clean():
    a = list(demo_company.customers(500, seed=3))
    assert a == list(demo_company.customers(500, seed=3))
    assert a != list(demo_company.customers(500, seed=4))
    assert a[0].name == "上海华东机电有限公司" and a[0].code == "C00001"
    assert len({c.name for c in a}) == 500
    domestic = [c for c in a if c.currency == "CNY"]
    assert all(is_valid_uscc(c.uscc) for c in domestic)
    assert len({c.uscc for c in domestic}) == len(domestic)
    export = [c for c in a if c.currency == "USD"]
    assert export and all(c.uscc is None and c.region == "Export" for c in export)


def test_products_cover_families_and_vat_rates():
    p = list(demo_company.products(2000, seed=1))
    assert p == list(demo_company.products(2000, seed=1))
    assert len({x.sku for x in p}) == 2000
    assert {x.vat for x in p} == {13, 9, 6}
    assert any(x.is_manufactured for x in p) and any(not x.is_stock_item for x in p)


def test_a_full_width_code_is_valid_after_width_folding():
    """People type credit codes with a Chinese input method: full-width digits and letters are the same code."""
    from include.bridge.uscc import check_char, is_valid_uscc, normalize_uscc

    code = "91310000MA1FL4B24" + check_char("91310000MA1FL4B24")
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert is_valid_uscc(full_width) and normalize_uscc(f" {full_width.lower()} ") == code
