"""The demo company both sandboxes are seeded from: customers and products, deterministic by seed.

A mid-sized Shanghai/Suzhou industrial-equipment maker: domestic customers with Chinese names and
unified social credit codes, a few export customers invoiced in USD, motors, gearboxes, bearings,
sensors, assembly cells, and services at 6% / 9% VAT. The CRM sandbox seeds its Accounts and Products
from the same lists (some with ERP codes, some without, some spelled differently), so the two
systems describe one company.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from include.bridge.uscc import ALPHABET, check_char

# city, admin division code, English, sales region
CITIES = [
    ("上海", "310115", "Shanghai", "East"), ("苏州", "320505", "Suzhou", "East"),
    ("无锡", "320214", "Wuxi", "East"), ("杭州", "330106", "Hangzhou", "East"),
    ("宁波", "330212", "Ningbo", "East"), ("南京", "320115", "Nanjing", "East"),
    ("常州", "320411", "Changzhou", "East"), ("北京", "110108", "Beijing", "North"),
    ("天津", "120116", "Tianjin", "North"), ("青岛", "370211", "Qingdao", "North"),
    ("深圳", "440305", "Shenzhen", "South"), ("广州", "440106", "Guangzhou", "South"),
    ("东莞", "441900", "Dongguan", "South"), ("佛山", "440606", "Foshan", "South"),
]
CORES = [
    ("华东", "Huadong"), ("恒力", "Hengli"), ("宏达", "Hongda"), ("永盛", "Yongsheng"), ("金桥", "Jinqiao"),
    ("嘉禾", "Jiahe"), ("中瑞", "Zhongrui"), ("汇丰", "Huifeng"), ("新源", "Xinyuan"), ("德信", "Dexin"),
    ("鼎盛", "Dingsheng"), ("博远", "Boyuan"), ("锦程", "Jincheng"), ("天成", "Tiancheng"), ("正泰", "Zhengtai"),
    ("联创", "Lianchuang"), ("华晟", "Huasheng"), ("启明", "Qiming"), ("瑞祥", "Ruixiang"), ("通达", "Tongda"),
    ("长江", "Changjiang"), ("海天", "Haitian"), ("万向", "Wanxiang"), ("同创", "Tongchuang"), ("晨光", "Chenguang"),
    ("精工", "Jinggong"), ("远航", "Yuanhang"), ("国泰", "Guotai"), ("宝丰", "Baofeng"), ("安泰", "Antai"),
]
INDUSTRIES = [
    ("机电", "Mechanical & Electrical"), ("自动化", "Automation"), ("精密机械", "Precision Machinery"),
    ("电气", "Electric"), ("科技", "Technology"), ("工业设备", "Industrial Equipment"),
    ("智能装备", "Intelligent Equipment"), ("传动设备", "Power Transmission"),
]
SUFFIXES = [("有限公司", "Co., Ltd."), ("有限公司", "Co., Ltd."), ("股份有限公司", "Co., Ltd."),
            ("集团有限公司", "Group Co., Ltd.")]
EXPORT = [
    ("Pacific Rim Automation Pte. Ltd.", "Singapore"), ("Saigon Precision Engineering Co., Ltd.", "Ho Chi Minh City"),
    ("Bangkok Industrial Supply Co., Ltd.", "Bangkok"), ("Penang Motion Systems Sdn. Bhd.", "Penang"),
    ("Jakarta Mesin Utama PT", "Jakarta"), ("Manila Power Drives Inc.", "Manila"),
    ("Dubai Gulf Machinery LLC", "Dubai"), ("Istanbul Otomasyon A.S.", "Istanbul"),
]
GROUPS = {"KA": 5_000_000, "DIST": 2_000_000, "SME": 500_000, "EXPORT": 1_500_000}

# prefix, Chinese name, English name, stock uom, VAT %, stock item, manufactured, price range, weight
FAMILIES = [
    ("MTR", "三相异步电机", "Three-phase induction motor", "PCS", 13, True, True, (800, 12000), 12),
    ("GBX", "行星减速机", "Planetary gearbox", "PCS", 13, True, True, (1500, 9000), 10),
    ("BRG", "深沟球轴承", "Deep groove ball bearing", "PCS", 13, True, False, (8, 300), 18),
    ("INV", "变频器", "Frequency inverter", "PCS", 13, True, False, (900, 20000), 10),
    ("SNS", "光电传感器", "Photoelectric sensor", "PCS", 13, True, False, (60, 900), 14),
    ("PLC", "PLC 控制模块", "PLC control module", "PCS", 13, True, False, (1200, 15000), 8),
    ("CBL", "屏蔽电缆", "Shielded cable", "M", 13, True, False, (3, 60), 6),
    ("CYL", "气缸", "Pneumatic cylinder", "PCS", 13, True, False, (100, 2000), 8),
    ("VLV", "电磁阀", "Solenoid valve", "PCS", 13, True, False, (80, 1500), 8),
    ("ASM", "自动化装配单元", "Automated assembly cell", "SET", 13, True, True, (50000, 300000), 2),
    ("SVC", "安装调试服务", "Installation and commissioning service", "H", 6, False, False, (300, 800), 2),
    ("FRT", "运输服务", "Freight service", "SET", 9, False, False, (200, 3000), 2),
]
WAREHOUSES = [("SH01", "上海中心仓", "上海"), ("SZ01", "苏州工厂仓", "苏州"), ("SZ02", "苏州备件仓", "苏州")]


@dataclass(frozen=True)
class Customer:
    code: str
    name: str
    name_en: str
    uscc: str | None
    group: str
    region: str
    city: str
    currency: str
    credit_limit: int | None
    payment_terms_days: int
    phone: str


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    name_en: str
    family: str
    uom: str
    vat: int
    is_stock_item: bool
    is_manufactured: bool
    price: float
    lead_time_days: int


def make_uscc(rng: random.Random, division: str) -> str:
    body = "91" + division + "".join(rng.choice(ALPHABET[:10] + "ABCDEFGHJKLMNPQRTUWXY") for _ in range(9))
    return body + check_char(body)


def customers(n: int, seed: int = 42) -> Iterator[Customer]:
    """n customers; C00001 is always 上海华东机电有限公司. About 1 in 20 is an export (USD) customer."""
    rng = random.Random(f"customers:{seed}")
    used: set[str] = set()
    for i in range(1, n + 1):
        code = f"C{i:05d}"
        if i % 20 == 7:
            base, city = EXPORT[(i // 20) % len(EXPORT)]
            name = base if base not in used else f"{base.rsplit(' ', 2)[0]} {i} {' '.join(base.rsplit(' ', 2)[1:])}"
            used.add(name)
            yield Customer(code, name, name, None, "EXPORT", "Export", city, "USD", None, 60,
                           f"+65 {rng.randint(6000_0000, 9999_9999)}")
            continue
        if i == 1:
            city, core, ind, suf = CITIES[0], CORES[0], INDUSTRIES[0], SUFFIXES[0]
        else:
            city, core, ind, suf = (rng.choice(CITIES), rng.choice(CORES), rng.choice(INDUSTRIES),
                                    rng.choice(SUFFIXES))
        name = f"{city[0]}{core[0]}{ind[0]}{suf[0]}"
        name_en = f"{city[2]} {core[1]} {ind[1]} {suf[1]}"
        branch = 2
        while name in used:  # keep names unique: a numbered branch company
            name = f"{city[0]}{core[0]}{ind[0]}{suf[0]}第{branch}分公司"
            name_en = f"{city[2]} {core[1]} {ind[1]} {suf[1]} Branch {branch}"
            branch += 1
        used.add(name)
        group = rng.choices(["KA", "DIST", "SME"], weights=[1, 2, 7])[0]
        limit = None if rng.random() < 0.6 else int(GROUPS[group] * rng.choice([0.2, 0.5, 1.5, 2]))
        yield Customer(code, name, name_en, make_uscc(rng, city[1]), group, city[3], city[0], "CNY", limit,
                       rng.choice([30, 30, 45, 60]), f"0{rng.randint(10, 999)}-{rng.randint(5000_0000, 8999_9999)}")


def products(n: int, seed: int = 42) -> Iterator[Product]:
    """n products spread over the families by weight; SKU codes like MTR-000123."""
    rng = random.Random(f"products:{seed}")
    weights = [f[8] for f in FAMILIES]
    for i in range(1, n + 1):
        fam = FAMILIES[0] if i == 1 else rng.choices(FAMILIES, weights=weights)[0]
        prefix, cn, en, uom, vat, stock, mfg, (lo, hi), _ = fam
        model = f"{prefix[0]}{rng.randint(1, 9)}-{rng.randint(10, 999)}{rng.choice('ABCDEFGHK')}"
        price = round(rng.uniform(lo, hi), 2) if hi > 100 else round(rng.uniform(lo, hi), 1)
        yield Product(f"{prefix}-{i:06d}", f"{cn} {model}", f"{en} {model}", prefix, uom, vat, stock, mfg, price,
                      rng.choice([7, 10, 14, 21]) if mfg else rng.choice([5, 7, 10, 14, 30]))
