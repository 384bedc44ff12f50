"""What a file in the drop folder looks like, both ways: CSV with a header row, one file per table and batch, and a
manifest (JSON) that lists the batch's files with their row count, size and sha256.

The manifest is written last, so a batch without one is still being written; a file whose size or hash differs
from its manifest was cut short (or is still arriving) and waits. CSV: the contract's column names as the header,
an empty field is NULL (legacy exports cannot tell '' from NULL), booleans `true` / `false` (also read: 1/0, Y/N,
是/否), dates ISO, CRLF line ends (what Excel and the older ERPs write). Encodings are the ones legacy Chinese ERPs
read and write: GB18030, GBK, UTF-8 with BOM (Excel's) or without.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import NamedTuple

FORMAT = "crm-erp-bridge/drop-folder/1"
MANIFEST_SUFFIX = ".manifest.json"
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8-sig", "utf-8-bom": "utf-8-sig",
             "gb18030": "gb18030", "gbk": "gbk", "cp936": "gbk"}
BOM = b"\xef\xbb\xbf"


def encoding_of(name: str, where: str) -> str:
    """The codec for a configured encoding name; an encoding the ERP side cannot be assumed to read is refused."""
    codec = ENCODINGS.get(str(name).strip().lower())
    if codec is None:
        raise ValueError(f"{where}: encoding {name!r} is not one the drop folder writes or reads "
                         f"(one of {', '.join(sorted(set(ENCODINGS.values())))})")
    return codec


# --------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class FileEntry:
    name: str
    table: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    batch: str
    encoding: str
    files: list[FileEntry]
    mode: str = "delta"           # delta: rows upsert by key; full: the file is the whole table
    flow: str | None = None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    format: str = FORMAT

    @property
    def name(self) -> str:
        return self.batch + MANIFEST_SUFFIX

    def dump(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=True, indent=1).encode("ascii")


class ManifestError(ValueError):
    """A manifest that cannot be trusted: what is wrong with it, in words for the operator."""


def parse_manifest(name: str, data: bytes) -> Manifest:
    """A manifest, strictly: unknown keys, missing ones or values of the wrong type are refused, never guessed."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{name}: not a JSON manifest ({exc})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{name}: a manifest is a JSON object")
    known = {"batch", "encoding", "files", "mode", "flow", "created_at", "format"}
    if unknown := sorted(set(raw) - known):
        raise ManifestError(f"{name}: unknown manifest key(s) {', '.join(unknown)}")
    if raw.get("format") != FORMAT:
        raise ManifestError(f"{name}: format {raw.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(raw.get("batch"), str) or not raw["batch"] or name != raw["batch"] + MANIFEST_SUFFIX:
        raise ManifestError(f"{name}: its batch must name it ({raw.get('batch')!r}{MANIFEST_SUFFIX})")
    if raw.get("mode", "delta") not in ("delta", "full"):
        raise ManifestError(f"{name}: mode {raw.get('mode')!r} is neither delta nor full")
    try:
        encoding = encoding_of(raw.get("encoding", ""), name)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    files = raw.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestError(f"{name}: no files listed")
    entries = []
    for n, entry in enumerate(files, 1):
        types = {"name": str, "table": str, "rows": int, "bytes": int, "sha256": str}
        if not isinstance(entry, dict) or set(entry) != set(types) or not all(
                isinstance(entry[k], t) and not isinstance(entry[k], bool) for k, t in types.items()):
            raise ManifestError(f"{name}: file #{n} must have exactly {', '.join(types)} "
                                f"(texts and whole numbers), got {entry!r}")
        if "/" in entry["name"] or "\\" in entry["name"] or entry["name"].startswith("."):
            raise ManifestError(f"{name}: file #{n} {entry['name']!r} is not a plain file name in this folder")
        entries.append(FileEntry(**entry))
    return Manifest(batch=raw["batch"], encoding=encoding, files=entries, mode=raw.get("mode", "delta"),
                    flow=raw.get("flow"), created_at=str(raw.get("created_at", "")))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_against(entry: FileEntry, data: bytes | None) -> str | None:
    """Why a data file does not (yet) match its manifest entry, or None when it does."""
    if data is None:
        return f"{entry.name} is listed in the manifest but not in the folder (yet)"
    if len(data) != entry.bytes:
        return f"{entry.name} has {len(data):,} bytes, its manifest says {entry.bytes:,} (cut short or still arriving)"
    if sha256(data) != entry.sha256:
        return f"{entry.name}: sha256 differs from its manifest (changed or damaged in transfer)"
    return None


# ------------------------------------------------------------------------------------------------ writing
def text_of(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value.normalize() if value == value.to_integral() else value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


class Unencodable(NamedTuple):
    index: int      # the row's position in what was given
    column: str
    text: str       # the characters the encoding cannot hold


def unencodable(columns: list[str], rows: Iterable[tuple], encoding: str) -> list[Unencodable]:
    """Rows with a value the encoding cannot hold (GBK has no 𠀀 or emoji; GB18030 and UTF-8 hold everything)."""
    bad = []
    for index, row in enumerate(rows):
        for column, value in zip(columns, row, strict=True):
            text = text_of(value)
            try:
                text.encode(encoding)
            except UnicodeEncodeError:
                bad.append(Unencodable(index, column, "".join(ch for ch in text if not _fits(ch, encoding))))
                break
    return bad


def _fits(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


def encode_csv(columns: list[str], rows: Iterable[tuple], encoding: str) -> bytes:
    """Header and rows as CSV bytes in `encoding` (utf-8-sig: with the BOM Excel needs)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([text_of(v) for v in row] for row in rows)
    return out.getvalue().encode(encoding)


# ------------------------------------------------------------------------------------------------ reading
class Line(NamedTuple):
    line_no: int               # physical line the record starts on (1 = the header)
    values: list[str] | None   # None when the line is malformed
    error: str | None
    raw: str                   # the line as text (undecodable bytes shown as \x..), for the quarantine


def read_csv(data: bytes, encoding: str, file_name: str) -> tuple[list[str], Iterator[Line]]:
    """The header and the records of a CSV file. A line that does not decode, does not parse or has the wrong
    number of fields comes back with its error (file name and line number in it); the others are unaffected."""
    if encoding in ("utf-8", "utf-8-sig") and data.startswith(BOM):
        data = data[len(BOM):]
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    physical = data.splitlines(keepends=True)
    source = _Lines(physical, codec, file_name)
    reader = csv.reader(source, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{file_name}: empty file, no header row") from None
    except csv.Error as exc:
        raise ValueError(f"{file_name}: line 1 (header): {exc}") from None
    if source.errors:
        raise ValueError(f"{file_name}: {source.errors[0][1]}")
    header = [h.strip() for h in header]
    return header, _records(reader, source, header, file_name)


class _Lines:
    """Feeds csv.reader decoded lines, remembering which physical line each record starts on; a line that does
    not decode is set aside as an error instead of being fed."""

    def __init__(self, physical: list[bytes], codec: str, file_name: str):
        self.physical, self.codec, self.file_name = physical, codec, file_name
        self.next_no = 1            # the physical line the next pull returns
        self.errors: list[tuple[int, str, str]] = []
        self.raw: dict[int, str] = {}

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while self.next_no <= len(self.physical):
            no, chunk = self.next_no, self.physical[self.next_no - 1]
            self.next_no += 1
            try:
                text = chunk.decode(self.codec)
            except UnicodeDecodeError as exc:
                shown = chunk.decode(self.codec, errors="backslashreplace").rstrip("\r\n")
                self.errors.append((no, f"{self.file_name} line {no}: bytes not valid {self.codec} at byte "
                                        f"{exc.start + 1} ({chunk[exc.start:exc.start + 4]!r})", shown))
                continue
            self.raw[no] = text.rstrip("\r\n")
            return text
        raise StopIteration


def _records(reader, source: _Lines, header: list[str], file_name: str) -> Iterator[Line]:
    while True:
        start = source.next_no
        values, error, done = None, None, False
        try:
            values = next(reader)
        except StopIteration:
            done = True
        except csv.Error as exc:
            error = exc
        while source.errors:  # lines that did not decode, in the order they were met
            no, why, shown = source.errors.pop(0)
            yield Line(no, None, why, shown)
        if done:
            return
        # the record starts on the first line it read that decoded (one that did not was reported above)
        start = min((n for n in range(start, source.next_no) if n in source.raw), default=start)
        raw = source.raw.get(start, "")
        if error:
            yield Line(start, None, f"{file_name} line {start}: {error}", raw)
        elif not values or values == [""]:
            continue  # a blank line (some tools end a file with two CRLFs)
        elif len(values) != len(header):
            yield Line(start, None, f"{file_name} line {start}: {len(values)} fields, the header has {len(header)}",
                       raw)
        else:
            yield Line(start, values, None, raw)
