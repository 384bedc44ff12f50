"""The drop folder's file format, one function at a time: manifests are strict, a file must match its manifest,
a malformed line is reported with its line number and never stops the lines around it, encodings round-trip."""

from __future__ import annotations

import json
import types

import pytest

from include.adapters.csv_folder import fileformat
from include.adapters.csv_folder.folders import LocalFolder, folder_from_connection


def manifest_bytes(**changes) -> bytes:
    data = b"sku\r\nA\r\n"
    raw = {"batch": "b1", "encoding": "gb18030", "mode": "delta", "flow": None, "created_at": "",
           "format": fileformat.FORMAT, "files": [{"name": "b1__items.csv", "table": "items", "rows": 1,
                                                    "bytes": len(data), "sha256": fileformat.sha256(data)}]}
    return json.dumps(raw | changes).encode()


def test_a_manifest_round_trips_and_anything_odd_in_it_is_refused():
    m = fileformat.parse_manifest("b1.manifest.json", manifest_bytes())
    assert m.files[0].rows == 1 and fileformat.parse_manifest(m.name, m.dump()) == m
    for changes, words in (({"mode": "replace"}, "neither delta nor full"), ({"encoding": "big5"}, "not one"),
                           ({"batch": "b2"}, "must name it"), ({"files": []}, "no files"),
                           ({"extra": 1}, "unknown manifest key"), ({"format": "v0"}, "format"),
                           ({"files": [{"name": "../x.csv", "table": "t", "rows": 1, "bytes": 1, "sha256": "0"}]},
                            "plain file name"),
                           ({"files": [{"name": "x.csv", "table": "t", "rows": "1", "bytes": 1, "sha256": "0"}]},
                            "whole numbers")):
        with pytest.raises(fileformat.ManifestError, match=words):
            fileformat.parse_manifest("b1.manifest.json", manifest_bytes(**changes))
    with pytest.raises(fileformat.ManifestError, match="not a JSON manifest"):
        fileformat.parse_manifest("b1.manifest.json", manifest_bytes()[:20])  # half-written


def test_a_file_cut_short_or_changed_does_not_match_its_manifest():
    data = b"sku\r\nA\r\nB\r\n"
    entry = fileformat.FileEntry("f.csv", "items", 2, len(data), fileformat.sha256(data))
    assert fileformat.check_against(entry, data) is None
    assert "cut short" in fileformat.check_against(entry, data[:5])
    assert "sha256 differs" in fileformat.check_against(entry, data.replace(b"B", b"C"))
    assert "not in the folder" in fileformat.check_against(entry, None)


@pytest.mark.parametrize("encoding", ["gb18030", "gbk", "utf-8-sig", "utf-8"])
def test_chinese_text_round_trips_in_every_encoding(encoding):
    rows = [("上海华东机电有限公司", None, True), ('say "hi", twice', "a\nb", False)]
    data = fileformat.encode_csv(["name", "note", "active"], rows, encoding)
    assert data.startswith(fileformat.BOM) == (encoding == "utf-8-sig")
    header, lines = fileformat.read_csv(data, encoding, "f.csv")
    assert header == ["name", "note", "active"]
    assert [line.values for line in lines] == [["上海华东机电有限公司", "", "true"],
                                               ['say "hi", twice', "a\nb", "false"]]


def test_gbk_cannot_hold_every_character_and_says_which():
    bad = fileformat.unencodable(["name"], [("华为",), ("𠀀科技",)], "gbk")
    assert bad == [fileformat.Unencodable(1, "name", "𠀀")]
    assert not fileformat.unencodable(["name"], [("𠀀科技",)], "gb18030")


def test_malformed_lines_come_back_with_their_line_numbers_and_the_rest_reads():
    data = "a,b\r\n1,2\r\n3\r\n4,5,6\r\n".encode("gbk") + b"\xff\xfe,7\r\n" + '8,"unterminated\r\n'.encode("gbk")
    header, lines = fileformat.read_csv(data, "gbk", "f.csv")
    got = {line.line_no: (line.values, line.error) for line in lines}
    assert got[2] == (["1", "2"], None)
    assert "line 3: 1 fields" in got[3][1] and "line 4: 3 fields" in got[4][1]
    assert "line 5: bytes not valid gbk" in got[5][1]
    assert "line 6" in got[6][1]


def test_a_connection_is_checked_strictly(tmp_path):
    def conn(conn_type="fs", **extra):
        return types.SimpleNamespace(conn_id="erp_files", conn_type=conn_type, host=None, port=None, login=None,
                                     password=None, extra_dejson=extra)

    folder, settings = folder_from_connection(conn(path=str(tmp_path), encoding="GBK"))
    assert isinstance(folder, LocalFolder) and settings["encoding"] == "gbk"
    assert (tmp_path / "from_erp" / "rejected").is_dir()
    for bad, words in ((conn(path=str(tmp_path), encodng="gbk"), "unknown extra key"),
                       (conn(encoding="gbk"), "'path'"), (conn(path=str(tmp_path), encoding="big5"), "not one"),
                       (conn("ftp", path="/x"), "not a drop folder"), (conn("sftp", path="/x"), "host and login")):
        with pytest.raises(ValueError, match=words):
            folder_from_connection(bad)
    folder.write_atomic("to_erp/x.csv", b"1")
    assert folder.list("to_erp") == ["x.csv"] and not [p for p in (tmp_path / "to_erp").iterdir()
                                                        if p.name.endswith(".tmp")]
