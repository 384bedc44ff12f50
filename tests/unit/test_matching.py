"""Master-data matching measured on a labeled set generated from the demo company's real-looking names,
with the traps sales typing produces: full-width characters, case, punctuation, whitespace, legal-form
suffixes (有限公司 / 股份有限公司 / Co., Ltd.), city prefixes moved or left out, English names — and companies
that only look alike (same trade name in another city, another industry, a branch)."""

import random
from functools import cache
from pathlib import Path

import yaml

from include.bridge.matching import Account, Customer, Normalizer, match_customers
from include.sandbox import demo_company

MAPPING = Path(__file__).resolve().parents[2] / "include/mappings/master_data.yaml"
CFG = yaml.safe_load(MAPPING.read_text())["customers"]
FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"})


def norm():
    return Normalizer(CFG["suffixes"], CFG["cities"])


def test_normalization_handles_width_case_punctuation_suffix_and_city():
    n = norm()
    same = ["苏州华东机电有限公司", "华东机电（苏州）有限公司", "苏州市 华东机电 股份有限公司",
            "SUZHOU Huadong 机电 Co., Ltd.", "ｓｕｚｈｏｕ华东机电有限公司"]
    keys = {n.key(s).core.replace("huadong", "华东") for s in same}
    assert keys == {"华东机电"}
    assert {n.key(s).city for s in same} == {"苏州"}
    assert n.key("Shanghai Huadong Mechanical & Electrical Co., Ltd.") == \
        n.key("shanghai  HUADONG mechanical electrical co ltd")


@cache
def labeled_set(seed: int = 11, n: int = 400):
    rng = random.Random(seed)
    erp = list(demo_company.customers(n, 42))
    customers = [Customer(c.code, c.name, c.name_en, c.uscc, c.city) for c in erp]
    names = {c.name for c in erp}
    accounts, truth = [], {}
    for i, c in enumerate(erp):
        crm_id = f"A{i:05d}"
        roll = rng.random()
        city = c.city if c.currency == "CNY" else None
        if c.currency != "CNY" or roll < 0.15:
            name = c.name
        elif roll < 0.30:
            name = c.name.translate(FULL_WIDTH).replace("(", "（").replace(")", "）")
        elif roll < 0.45:
            name = c.name_en.upper().replace(",", "").replace(".", "")
        elif roll < 0.60 and c.name.startswith(c.city):
            name = c.name[len(c.city):].replace("有限公司", f"（{c.city}）有限公司", 1)
        elif roll < 0.75:
            name = c.name.replace("有限公司", " 有限公司 ").replace(c.city, c.city + "市 ", 1)
        elif roll < 0.85 and c.name.startswith(c.city):
            name = c.name[len(c.city):]  # city left out: the billing city tells
        else:
            name = c.name_en.lower()
        accounts.append(Account(crm_id, name, city=city))
        truth[crm_id] = c.code
    # traps: look-alikes that are NOT an ERP customer (another city / industry / a branch that does not exist)
    for i, c in enumerate(erp[:120]):
        if not c.name.startswith(c.city):
            continue
        other_city = rng.choice([x[0] for x in demo_company.CITIES if x[0] != c.city])
        for fake in (c.name.replace(c.city, other_city, 1), c.name.replace("有限公司", "第9分公司"),
                     c.name.replace(c.name[len(c.city) + 2:len(c.city) + 4], "电器", 1)):
            if fake not in names:
                crm_id = f"T{i:05d}{len(accounts)}"
                accounts.append(Account(crm_id, fake, city=None))
                truth[crm_id] = None
    return customers, accounts, truth


def test_precision_of_auto_links_is_at_least_99_percent_and_recall_is_reported():
    customers, accounts, truth = labeled_set()
    links, reviews = match_customers(accounts, customers, CFG)
    correct = sum(truth[link.crm_id] == link.erp_key for link in links)
    positives = sum(v is not None for v in truth.values())
    precision, recall = correct / len(links), correct / positives
    wrong = [(link.crm_id, next(a.name for a in accounts if a.crm_id == link.crm_id), link.erp_key)
             for link in links if truth[link.crm_id] != link.erp_key]
    print(f"\nmatching: {len(accounts)} CRM accounts ({positives} with an ERP customer, "
          f"{len(accounts) - positives} look-alike traps), {len(links)} auto-linked, precision {precision:.3f}, "
          f"recall {recall:.3f}, {len(reviews)} review items")
    assert precision >= 0.99, wrong[:10]
    assert recall >= 0.6
    reviewed = {r.crm_id for r in reviews}
    # every look-alike close enough to be confusing is on the review list, not linked
    linked = {link.crm_id for link in links}
    assert not any(truth[c] is None for c in linked)
    assert any(truth.get(c) is None for c in reviewed)


def test_exact_keys_win_and_conflicts_and_duplicates_go_to_review():
    customers = [Customer("C1", "上海华东机电有限公司", "Shanghai Huadong Co., Ltd.", "91310115MA1K3Y2X5R", "上海"),
                 Customer("C2", "苏州华东机电有限公司", "Suzhou Huadong Co., Ltd.", None, "苏州")]
    valid = demo_company.make_uscc(random.Random(1), "310115")
    customers[0].uscc = valid
    accounts = [Account("a1", "华东机电", number="c1"),                  # code wins over a weak name
                Account("a2", "上海华东机电有限责任公司", uscc=valid),      # same company entered twice
                Account("a3", "苏州华东机电", number="C2", uscc=valid),    # code and credit code disagree
                Account("a4", "华东机电有限公司")]                          # which city? ambiguous
    links, reviews = match_customers(accounts, customers, CFG)
    assert [(x.erp_key, x.crm_id, x.rule) for x in links] == [("C1", "a1", "erp_code")]
    issues = {(r.issue, r.crm_id) for r in reviews}
    assert ("duplicate_in_crm", "a2") in issues and ("conflict", "a3") in issues and ("ambiguous", "a4") in issues


def test_bigram_candidates_are_the_top_by_shared_bigrams_with_ties_to_the_lower_code():
    """The bitset counting picks exactly what counting customer by customer would: the `limit` customers sharing
    the most bigrams with the name, ties to the lower code — including names sharing nothing, and fewer matches
    than the limit."""
    from collections import Counter

    from include.bridge.matching import BigramIndex, bigrams

    rng = random.Random(7)
    alphabet = "华东机电科技恒力宏达永盛金桥嘉禾"
    names = {f"C{i:05d}": "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))) for i in range(1, 701)}
    postings: dict[str, set[str]] = {}
    for code, name in names.items():
        for g in bigrams(name):
            postings.setdefault(g, set()).add(code)
    for limit in (1, 5, 50, 2000):
        index = BigramIndex(postings, limit=limit)
        for probe in [*rng.sample(sorted(names.values()), 40), "华东", "无关", "x"]:
            grams = bigrams(probe)
            shared = Counter(c for g in grams for c in postings.get(g, ()))
            expected = [c for c, _ in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
            assert sorted(index.top(grams)) == sorted(expected), (probe, limit)
