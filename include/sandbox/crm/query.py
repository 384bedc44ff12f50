"""COQL (the subset real integrations use) and search criteria, translated to parameterized SQLite.

COQL: SELECT f1, f2 FROM Module [WHERE cond] [ORDER BY f [ASC|DESC], ...] [LIMIT offset, count | LIMIT n
[OFFSET m]] with =, !=, <>, <, <=, >, >=, [NOT] LIKE, [NOT] IN (...), IS [NOT] NULL, BETWEEN, AND / OR and
parentheses. Limits as Zoho's: 50 columns, 25 criteria, 50 values per IN, LIMIT 2,000, OFFSET 100,000.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from include.sandbox.crm import meta

MAX_LIMIT, MAX_OFFSET, MAX_COLUMNS, MAX_CRITERIA, MAX_IN = 2000, 100_000, 50, 25, 50
KEYWORDS = {"select", "from", "where", "and", "or", "order", "by", "asc", "desc", "limit", "offset", "like", "not",
            "in", "is", "null", "between", "true", "false"}
TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)"
                   r"|(?P<punct>[(),*])|(?P<word>[A-Za-z_$][A-Za-z0-9_$.]*))")


class QueryError(Exception):
    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


@dataclass
class Tok:
    kind: str
    value: object
    pos: int


def _tokenize(text: str) -> list[Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _syntax(text, pos)
        kind = m.lastgroup
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "str":
            value = raw[1:-1].replace("''", "'").replace("\\'", "'")
        elif kind == "num":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "word" and raw.lower() in KEYWORDS:
            kind, value = "kw", raw.lower()
        else:
            value = raw
        tokens.append(Tok(kind, value, start))
        pos = m.end()
    tokens.append(Tok("end", None, len(text)))
    return tokens


def _syntax(text: str, pos: int) -> QueryError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    near = text[pos:pos + 20].split()[0] if text[pos:].strip() else "end of query"
    return QueryError("SYNTAX_ERROR", f"error occured while parsing the query near {near}",
                      {"near": near, "line": line, "column": column})


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokenize(text), 0
        self.criteria = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self, kind: str | None = None, value=None) -> Tok:
        tok = self.peek()
        if (kind and tok.kind != kind) or (value is not None and tok.value != value):
            raise _syntax(self.text, tok.pos)
        self.i += 1
        return tok

    def accept(self, kind: str, value=None) -> Tok | None:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def parse(self) -> dict:
        self.take("kw", "select")
        columns = [self.take("word").value]
        while self.accept("punct", ","):
            columns.append(self.take("word").value)
        self.take("kw", "from")
        module = self.take("word").value
        where = self.expr() if self.accept("kw", "where") else None
        order = []
        if self.accept("kw", "order"):
            self.take("kw", "by")
            while True:
                name = self.take("word").value
                desc = bool(self.accept("kw", "desc"))
                if not desc:
                    self.accept("kw", "asc")
                order.append((name, desc))
                if not self.accept("punct", ","):
                    break
        offset, limit = 0, 200
        if self.accept("kw", "limit"):
            first = self.take("num").value
            if self.accept("punct", ","):
                offset, limit = first, self.take("num").value
            else:
                limit = first
                if self.accept("kw", "offset"):
                    offset = self.take("num").value
        self.take("end")
        return {"columns": columns, "module": module, "where": where, "order": order, "offset": offset,
                "limit": limit}

    def expr(self):
        node = self.term()
        while self.accept("kw", "or"):
            node = ("or", node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.accept("kw", "and"):
            node = ("and", node, self.factor())
        return node

    def factor(self):
        if self.accept("punct", "("):
            node = self.expr()
            self.take("punct", ")")
            return node
        self.criteria += 1
        name = self.take("word").value
        if tok := self.accept("op"):
            return ("cmp", name, "!=" if tok.value == "<>" else tok.value, self.value())
        negate = bool(self.accept("kw", "not"))
        if self.accept("kw", "like"):
            return ("like", name, negate, self.take("str").value)
        if self.accept("kw", "in"):
            self.take("punct", "(")
            values = [self.value()]
            while self.accept("punct", ","):
                values.append(self.value())
            self.take("punct", ")")
            if len(values) > MAX_IN:
                raise QueryError("LIMIT_EXCEEDED", f"more than {MAX_IN} values in IN", {"limit": MAX_IN})
            return ("in", name, negate, values)
        if self.accept("kw", "is"):
            negate = bool(self.accept("kw", "not"))
            self.take("kw", "null")
            return ("null", name, negate)
        if self.accept("kw", "between"):
            low = self.value()
            self.take("kw", "and")
            return ("between", name, low, self.value())
        raise _syntax(self.text, self.peek().pos)

    def value(self):
        tok = self.peek()
        if tok.kind in ("str", "num"):
            self.i += 1
            return tok.value
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[tok.value]
        raise _syntax(self.text, tok.pos)


class Columns:
    """Maps a module's field names to SQL expressions over the records table."""

    def __init__(self, module: meta.Module, time_first: bool = False):
        self.module = module
        self.time_first = time_first  # `+id`: SQLite may not walk the id index for this query (see compile_coql)

    def sql(self, name: str) -> tuple[str, str]:
        """(expression, field type); raises INVALID_QUERY for unknown fields."""
        if name == "id":
            return ("+id" if self.time_first else "id"), "bigint"
        if name in ("Created_Time", "Modified_Time"):
            return ("created_ts" if name == "Created_Time" else "modified_ts"), "timestamp"
        if name in ("Owner", "Created_By", "Modified_By"):  # system user lookups, as in Zoho's COQL
            return f"json_extract(data, '$.{name}.id')", "lookup"
        f = self.module.fields.get(name)
        if f is None:
            raise QueryError("INVALID_QUERY", f"invalid column given - {name}", {"column_name": name})
        if f.type in ("lookup", "ownerlookup"):
            return f"json_extract(data, '$.{name}.id')", "lookup"
        return f"json_extract(data, '$.{name}')", f.type

    @staticmethod
    def param(ftype: str, value):
        if value is None:
            return None
        if ftype == "timestamp":
            parsed = meta.parse_datetime(str(value))
            if parsed is None:
                raise QueryError("INVALID_QUERY", f"invalid datetime value - {value}", {"value": str(value)})
            return parsed.timestamp()
        if ftype in ("bigint", "lookup"):
            return int(value) if str(value).isdigit() else value
        if ftype == "boolean" and isinstance(value, str):
            return 1 if value.lower() == "true" else 0
        if isinstance(value, bool):
            return int(value)
        return value


def _where(node, cols: Columns, params: list) -> str:
    kind = node[0]
    if kind in ("and", "or"):
        return f"({_where(node[1], cols, params)} {kind.upper()} {_where(node[2], cols, params)})"
    expr, ftype = cols.sql(node[1])
    if kind == "cmp":
        params.append(cols.param(ftype, node[3]))
        return f"{expr} {'<>' if node[2] == '!=' else node[2]} ?"
    if kind == "like":
        params.append(node[3])
        return f"{expr} {'NOT ' if node[2] else ''}LIKE ?"
    if kind == "in":
        params.extend(cols.param(ftype, v) for v in node[3])
        return f"{expr} {'NOT ' if node[2] else ''}IN ({', '.join('?' * len(node[3]))})"
    if kind == "null":
        return f"{expr} IS {'NOT ' if node[2] else ''}NULL"
    params.extend([cols.param(ftype, node[2]), cols.param(ftype, node[3])])
    return f"{expr} BETWEEN ? AND ?"


def compile_coql(text: str) -> dict:
    """Parse and check a COQL query; returns the SQL, its parameters and the selected columns."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("INVALID_QUERY", "select_query is missing", {"param_name": "select_query"})
    parser = _Parser(text)
    q = parser.parse()
    module = meta.modules().get(q["module"])
    if module is None:
        raise QueryError("INVALID_QUERY", f"invalid module given - {q['module']}", {"module": q["module"]})
    if len(q["columns"]) > MAX_COLUMNS:
        raise QueryError("LIMIT_EXCEEDED", f"more than {MAX_COLUMNS} columns selected", {"limit": MAX_COLUMNS})
    if parser.criteria > MAX_CRITERIA:
        raise QueryError("LIMIT_EXCEEDED", f"more than {MAX_CRITERIA} criteria", {"limit": MAX_CRITERIA})
    if not 1 <= q["limit"] <= MAX_LIMIT:
        raise QueryError("LIMIT_EXCEEDED", f"limit must be 1 to {MAX_LIMIT}", {"limit": MAX_LIMIT})
    if not 0 <= q["offset"] <= MAX_OFFSET:
        raise QueryError("LIMIT_EXCEEDED", f"offset must be at most {MAX_OFFSET}", {"offset": MAX_OFFSET})
    for c in q["columns"]:
        Columns(module).sql(c)

    def statement(time_first: bool) -> tuple[str, list]:
        cols = Columns(module, time_first)
        params: list = [module.api_name]
        sql = "SELECT id, data FROM records WHERE module = ?"
        if q["where"] is not None:
            sql += " AND " + _where(q["where"], cols, params)
        order = [f"{cols.sql(name)[0]} {'DESC' if desc else 'ASC'}" for name, desc in q["order"]] or ["+id ASC"
                                                                                                       if time_first
                                                                                                       else "id ASC"]
        sql += f" ORDER BY {', '.join(order)} LIMIT ? OFFSET ?"
        return sql, params + [q["limit"] + 1, q["offset"]]  # one extra row tells whether more records exist

    sql, params = statement(False)
    compiled = {"sql": sql, "params": params, "columns": q["columns"], "limit": q["limit"], "module": module.api_name}
    probe = _time_probe(q["where"], module)
    if probe:  # the route counts the probe's rows and takes the time-first statement when they are few
        compiled |= dict(zip(("time_sql", "time_params"), statement(True), strict=True)) | {"probe": probe}
    return compiled


# A Created_Time / Modified_Time lower bound matching at most this many records is read through its time index
# (then sorted); more, and walking the records in id order is cheaper.
TIME_FIRST_MAX = 20_000


def _time_probe(where, module: meta.Module) -> tuple[str, list] | None:
    """For a WHERE whose top-level AND terms include Created_Time / Modified_Time `>` / `>=` / BETWEEN: a count of
    the records that bound alone admits (an index range). Zoho's own store answers such filters from an index;
    SQLite, left alone, walks every record of the module in id order (0.9 s a page at 1,000,000 products)."""
    terms, stack = [], [where] if where is not None else []
    while stack:
        node = stack.pop()
        if node[0] == "and":
            stack += [node[1], node[2]]
        else:
            terms.append(node)
    for node in terms:
        if node[1] in ("Created_Time", "Modified_Time") and (
                (node[0] == "cmp" and node[2] in (">", ">=")) or node[0] == "between"):
            column = "created_ts" if node[1] == "Created_Time" else "modified_ts"
            low = Columns.param("timestamp", node[3] if node[0] == "cmp" else node[2])
            return (f"SELECT count(*) FROM (SELECT 1 FROM records WHERE module = ? AND {column} >= ? "
                    f"LIMIT {TIME_FIRST_MAX + 1})", [module.api_name, low])
    return None


# ------------------------------------------------------------------------------------ search criteria
SEARCH_OPS = {"equals": "=", "not_equal": "<>", "greater_than": ">", "greater_equal": ">=", "less_than": "<",
              "less_equal": "<=", "starts_with": "LIKE", "in": "IN"}
MAX_SEARCH_CONDITIONS = 10


def compile_criteria(criteria: str, module: meta.Module) -> tuple[str, list]:
    """((Field:operator:value)and(Field:operator:value)) -> SQL condition; backslash escapes ( ) , :"""
    cols, params, count = Columns(module), [], 0
    pos = 0

    def parse_group() -> str:
        nonlocal pos, count
        if criteria[pos:pos + 1] != "(":
            raise QueryError("INVALID_QUERY", "criteria must be enclosed in parentheses", {"param_name": "criteria"})
        pos += 1
        if criteria[pos:pos + 1] == "(":
            parts = [parse_group()]
            while criteria[pos:pos + 3].lower() in ("and", "or("):
                op = "AND" if criteria[pos:pos + 3].lower() == "and" else "OR"
                pos += 3 if op == "AND" else 2
                parts.append(parse_group())
                parts[-2:] = [f"({parts[-2]} {op} {parts[-1]})"]
            if criteria[pos:pos + 1] != ")":
                raise QueryError("INVALID_QUERY", "unbalanced parentheses in criteria", {"param_name": "criteria"})
            pos += 1
            return parts[0]
        buf, escaped = "", False
        while pos < len(criteria):
            ch = criteria[pos]
            pos += 1
            if escaped:
                buf += ch
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == ")":
                break
            else:
                buf += ch
        else:
            raise QueryError("INVALID_QUERY", "unbalanced parentheses in criteria", {"param_name": "criteria"})
        count += 1
        fieldname, _, rest = buf.partition(":")
        operator, _, value = rest.partition(":")
        if operator not in SEARCH_OPS:
            raise QueryError("INVALID_QUERY", f"invalid operator {operator}", {"param_name": "criteria"})
        expr, ftype = cols.sql(fieldname)
        if operator == "in":
            values = value.split(",")
            params.extend(cols.param(ftype, v) for v in values)
            return f"{expr} IN ({', '.join('?' * len(values))})"
        if operator == "starts_with":
            params.append(value.replace("%", r"\%") + "%")
            return f"{expr} LIKE ? ESCAPE '\\'"
        params.append(cols.param(ftype, _typed(value, ftype)))
        return f"{expr} {SEARCH_OPS[operator]} ?"

    sql = parse_group()
    if pos != len(criteria):
        raise QueryError("INVALID_QUERY", "unexpected text after criteria", {"param_name": "criteria"})
    if count > MAX_SEARCH_CONDITIONS:
        raise QueryError("LIMIT_EXCEEDED", f"more than {MAX_SEARCH_CONDITIONS} conditions", {"limit": 10})
    return sql, params


def _typed(value: str, ftype: str):
    if ftype in meta.NUMBER_TYPES or ftype in meta.INTEGER_TYPES:
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return value
    if ftype == "boolean":
        return value.lower() == "true"
    return value
