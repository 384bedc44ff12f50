"""Master-data matching of CRM accounts to ERP customers: pure functions, settings from
include/mappings/master_data.yaml.

Order of evidence: the ERP customer code in Account_Number, then a valid unified social credit code, then
the name. Names are compared after normalization (NFKC full-width -> half-width, case, punctuation and
whitespace, legal-form suffixes) with the city taken out and compared separately, because the same trade
name in two cities is usually two companies (branches). A name match links only when it is both strong
and clearly ahead of the runner-up; everything doubtful goes to the review list, never merged silently.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from include.bridge.uscc import is_valid_uscc, normalize_uscc

RULE_RANK = {"manual": 0, "erp_code": 1, "uscc": 2, "name": 3}
PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
BRACKETED = re.compile(r"[(\[]([^)\]]*)[)\]]")


@dataclass(frozen=True)
class NameKey:
    core: str
    city: str | None


@dataclass
class Normalizer:
    suffixes: list[str]
    cities: dict[str, list[str]]
    _alias: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.suffixes = sorted(self.suffixes, key=len, reverse=True)
        self._alias = {}
        for city, aliases in self.cities.items():
            for a in [city, *aliases]:
                self._alias[PUNCT.sub("", unicodedata.normalize("NFKC", a).lower())] = city
        self._prefixes = sorted(self._alias, key=len, reverse=True)

    def city(self, text: str | None) -> str | None:
        if not text:
            return None
        return self._alias.get(PUNCT.sub("", unicodedata.normalize("NFKC", text).lower()))

    def key(self, name: str | None) -> NameKey:
        text = unicodedata.normalize("NFKC", name or "").lower()
        city = None
        for inner in BRACKETED.findall(text):  # 华东机电（苏州）有限公司
            if self.city(inner):
                city = self.city(inner)
                text = text.replace(f"({inner})", " ").replace(f"[{inner}]", " ")
        core = PUNCT.sub("", text)
        for prefix in self._prefixes:  # 苏州华东机电 / suzhou huadong ...
            if core.startswith(prefix) and len(core) > len(prefix) + 1:
                city, core = city or self._alias[prefix], core[len(prefix):]
                break
        stripped = True
        while stripped:  # 股份有限公司, Co., Ltd. ... (possibly stacked: "Group Co., Ltd.")
            stripped = False
            for suffix in self.suffixes:
                if core.endswith(suffix) and len(core) > len(suffix) + 1:
                    core, stripped = core[: -len(suffix)], True
                    break
        return NameKey(core, city)


@dataclass
class Account:           # CRM side
    crm_id: str
    name: str
    number: str | None = None
    uscc: str | None = None
    city: str | None = None


@dataclass
class Customer:          # ERP side
    code: str
    name: str
    name_en: str | None = None
    uscc: str | None = None
    city: str | None = None


@dataclass
class Link:
    erp_key: str
    crm_id: str
    rule: str
    score: float


@dataclass
class Review:
    issue: str
    crm_id: str | None
    crm_label: str | None
    erp_key: str | None
    score: float | None
    candidates: list[dict]
    detail: str


def similarity(a: NameKey, b: NameKey, different_city_factor: float) -> float:
    if not a.core or not b.core:
        return 0.0
    score = 1.0 if a.core == b.core else SequenceMatcher(None, a.core, b.core, autojunk=False).ratio()
    if a.city and b.city and a.city != b.city:
        score *= different_city_factor
    return round(score, 3)


def bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(max(len(text) - 1, 1))}


NONZERO_BYTE = re.compile(rb"[^\x00]")


class BigramIndex:
    """Which customers share the most bigrams with a name, without counting customer by customer.

    Counting shared bigrams in a dict costs the length of every bigram's posting list, and a common bigram (科技,
    机电, "co") is in a large share of all customers, so over all accounts it grew with the square of the customers
    (20,000 accounts: 96 s). Here each bigram is a bitset over the customers in code order; a name's bitsets are
    added as binary counters (bit planes, a few big-integer operations each, in C), and the planes say at once which
    customers share at least t bigrams. The result is the same top `limit` by shared bigrams, ties to the lower code
    (the dict's ties went by hash order, which changed from process to process)."""

    def __init__(self, postings: dict[str, set[str]], limit: int = 50):
        self.codes = sorted({c for codes in postings.values() for c in codes})
        self.limit, self.size = limit, len(self.codes)
        at = {c: i for i, c in enumerate(self.codes)}
        # a bitset kept for every bigram in at least 1 of 256 customers (at most 32 bytes per posting in all); a
        # rarer bigram keeps its positions, and its bitset is made when a name has it
        self.bitsets: dict[str, int] = {}
        self.rare: dict[str, list[int]] = {}
        for g, codes in postings.items():
            positions = [at[c] for c in codes]
            if len(positions) * 256 >= self.size:
                self.bitsets[g] = self._bitset(positions)
            else:
                self.rare[g] = positions

    def _bitset(self, positions: list[int]) -> int:
        bits = bytearray((self.size + 7) // 8)
        for p in positions:
            bits[p >> 3] |= 1 << (p & 7)
        return int.from_bytes(bits, "little")

    def top(self, grams) -> list[str]:
        planes: list[int] = []  # planes[j]: the customers whose count of shared bigrams has bit j set
        present = 0
        for g in grams:
            carry = self.bitsets.get(g)
            if carry is None:
                if g not in self.rare:
                    continue  # no customer has this bigram
                carry = self._bitset(self.rare[g])
            present += 1
            for j in range(len(planes)):
                planes[j], carry = planes[j] ^ carry, planes[j] & carry
                if not carry:
                    break
            if carry:
                planes.append(carry)
        if not present:
            return []
        above = 0  # fewer than `limit` customers share more than t bigrams; fill up with those sharing exactly t
        for t in range(present, 0, -1):
            at_least = self._at_least(planes, t)
            if at_least.bit_count() >= self.limit:
                break
            above = at_least
        return self._lowest(above, self.limit) + self._lowest(at_least & ~above, self.limit - above.bit_count())

    @staticmethod
    def _at_least(planes: list[int], t: int) -> int:
        """The customers whose count (bit planes, lowest first) is >= t: compared bit by bit from the top (an element
        left in `equal` that is already in `greater` does no harm)."""
        if t >> len(planes):
            return 0  # no count reaches t
        greater, equal = 0, -1
        for j in range(len(planes) - 1, -1, -1):
            if (t >> j) & 1:
                equal &= planes[j]
            else:
                greater |= equal & planes[j]
        return greater | equal

    def _lowest(self, bits: int, k: int) -> list[str]:
        """The codes of the k lowest set bits (the scan of zero bytes runs in C)."""
        out: list[str] = []
        if k <= 0 or not bits:
            return out
        for hit in NONZERO_BYTE.finditer(bits.to_bytes((bits.bit_length() + 7) // 8, "little")):
            byte, base = hit.group()[0], hit.start() * 8
            while byte and len(out) < k:
                low = byte & -byte
                out.append(self.codes[base + low.bit_length() - 1])
                byte ^= low
            if len(out) >= k:
                break
        return out


class CustomerIndex:
    """The ERP's customers indexed for matching: by code, by credit code, by normalized name + city (and its
    bigrams); ERP-side duplicates are found while indexing and listed in `reviews`."""

    def __init__(self, customers: list[Customer], norm: Normalizer, city_factor: float):
        self.norm, self.factor = norm, city_factor
        self.by_code = {c.code.strip().upper(): c for c in customers}
        self.by_uscc: dict[str, list[Customer]] = defaultdict(list)
        self.keys: dict[str, list[NameKey]] = {}
        index: dict[str, set[str]] = defaultdict(set)  # bigram -> the customers whose name has it
        by_name: dict[NameKey, list[Customer]] = defaultdict(list)
        for c in customers:
            if is_valid_uscc(c.uscc):
                self.by_uscc[normalize_uscc(c.uscc)].append(c)
            city = norm.city(c.city)
            ks = [k if k.city else NameKey(k.core, city) for k in (norm.key(c.name), norm.key(c.name_en)) if k.core]
            self.keys[c.code] = ks
            by_name[ks[0]].append(c)
            for k in ks:
                for g in bigrams(k.core):
                    index[g].add(c.code)
        self.duplicates: set[str] = set()
        self.reviews: list[Review] = []
        for groups, what in ((self.by_uscc, "credit code"), (by_name, "name and city")):
            for group in groups.values():
                if len(group) > 1:
                    self.duplicates.update(c.code for c in group)
                    self.reviews.append(Review("duplicate_in_erp", None, None, group[0].code, None,
                                               [{"erp_key": c.code, "name": c.name} for c in group],
                                               f"{len(group)} ERP customers share the same {what}"))
        self.by_bigrams = BigramIndex(index)

    def name_score(self, name: str, code: str) -> float:
        return max(similarity(self.norm.key(name), ck, self.factor) for ck in self.keys[code]) if self.keys[code] \
            else 0

    def name_candidates(self, a: Account) -> list[dict]:
        """The three best ERP customers by name (the bigram index narrows to 50 first)."""
        k = self.norm.key(a.name)
        if not k.city and a.city:
            k = NameKey(k.core, self.norm.city(a.city))
        scored = []
        for code in self.by_bigrams.top(bigrams(k.core)):
            s = max(similarity(k, ck, self.factor) for ck in self.keys[code])
            scored.append({"erp_key": code, "name": self.by_code[code.upper()].name, "score": s, "rule": "name"})
        return sorted(scored, key=lambda c: (-c["score"], c["erp_key"]))[:3]


def match_customers(accounts: list[Account], customers: list[Customer], cfg: dict) -> tuple[list[Link], list[Review]]:
    ix = CustomerIndex(customers, Normalizer(cfg["suffixes"], cfg["cities"]), float(cfg["different_city_factor"]))
    reviews = list(ix.reviews)
    proposals: dict[str, list[tuple[Account, str, float]]] = defaultdict(list)
    for a in accounts:
        proposal = _propose(a, ix, cfg, reviews)
        if proposal:
            proposals[proposal[0]].append((a, proposal[1], proposal[2]))
    return _links_of(proposals, reviews), reviews


def _propose(a: Account, ix: CustomerIndex, cfg: dict, reviews: list[Review]) -> tuple[str, str, float] | None:
    """(ERP code, rule, score) the account would link to, or None (then a review may say why)."""
    auto, margin, review_at = float(cfg["auto_link_score"]), float(cfg["auto_link_margin"]), float(cfg["review_score"])
    code_hit = ix.by_code.get((a.number or "").strip().upper()) if a.number else None
    uscc = normalize_uscc(a.uscc)
    if uscc and not is_valid_uscc(uscc):
        reviews.append(Review("invalid_credit_code", a.crm_id, a.name, None, None, [],
                              f"Unified_Social_Credit_Code {uscc!r} fails the GB 32100 check character"))
        uscc = ""
    uscc_hits = ix.by_uscc.get(uscc, []) if uscc else []
    uscc_hit = uscc_hits[0] if len(uscc_hits) == 1 else None
    if code_hit and uscc_hit and code_hit.code != uscc_hit.code:
        reviews.append(Review("conflict", a.crm_id, a.name, code_hit.code, None,
                              [{"erp_key": code_hit.code, "name": code_hit.name, "rule": "erp_code"},
                               {"erp_key": uscc_hit.code, "name": uscc_hit.name, "rule": "uscc"}],
                              "Account_Number and the credit code point at different ERP customers"))
        return None
    if code_hit or uscc_hit:
        hit, rule = (code_hit, "erp_code") if code_hit else (uscc_hit, "uscc")
        score = ix.name_score(a.name, hit.code)
        if score < float(cfg["key_match_min_score"]):  # anyone can type another company's code or credit code
            reviews.append(Review("key_name_mismatch", a.crm_id, a.name, hit.code, score,
                                  [{"erp_key": hit.code, "name": hit.name, "score": score, "rule": rule}],
                                  f"{'Account_Number' if code_hit else 'the credit code'} names ERP customer "
                                  f"{hit.code} ({hit.name}), but the names disagree: not linked"))
            return None
        return hit.code, rule, score
    cands = ix.name_candidates(a)
    best = cands[0] if cands else None
    runner = cands[1]["score"] if len(cands) > 1 else 0.0
    clear = best and best["score"] - runner >= margin and best["erp_key"] not in ix.duplicates
    if best and best["score"] >= auto and clear:
        return best["erp_key"], "name", best["score"]
    if best and best["score"] >= review_at:
        why = ("the best name match is too close to the runner-up" if best["score"] >= auto
               else "the best name match is not strong enough to link automatically")
        reviews.append(Review("ambiguous", a.crm_id, a.name, best["erp_key"], best["score"], cands, why))
    return None


def _links_of(proposals: dict[str, list[tuple[Account, str, float]]], reviews: list[Review]) -> list[Link]:
    """One link per ERP customer: the strongest proposal wins, the others are CRM duplicates for review."""
    links: list[Link] = []
    for code, props in proposals.items():
        props.sort(key=lambda p: (RULE_RANK[p[1]], -p[2], p[0].crm_id))
        winner = props[0]
        links.append(Link(code, winner[0].crm_id, winner[1], winner[2]))
        for a, rule, score in props[1:]:
            reviews.append(Review("duplicate_in_crm", a.crm_id, a.name, code, score,
                                  [{"erp_key": code, "crm_id": winner[0].crm_id, "name": winner[0].name,
                                    "rule": winner[1]}],
                                  f"also matches ERP customer {code} ({rule}), already linked to CRM account "
                                  f"{winner[0].crm_id}: probably the same company entered twice"))
    return links
