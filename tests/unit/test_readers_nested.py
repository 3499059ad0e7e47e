"""Nested documents (bulletins) read by the yaml and json readers with the ``records`` option.

Expected values are read from the bundled OpenCOVID19-fr bulletins (include/samples/opencovid19fr_bulletins/) by eye.
"""

from __future__ import annotations

import io
import json

import pytest

from covidflow import PROJECT_ROOT
from covidflow.read import RawRecord, RawReject, ReaderError, open_records, read_records
from covidflow.read.jsondoc import nested_options_problems

SAMPLES = PROJECT_ROOT / "include" / "samples" / "opencovid19fr_bulletins"
OPTIONS = {
    "records": [{"path": "donneesNationales", "set": {"code": "FR"}}, {"path": "donneesRegionales"},
                {"path": "donneesDepartementales"}],
    "carry": ["date", "source.nom"],
    "ignore": {"victimes": "individual victims"},
}  # fmt: skip


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_spf_bulletin_blocks_become_flat_records(fmt: str) -> None:
    records = list(open_records(SAMPLES / f"sante-publique-france_2020-03-02.{fmt}", fmt, OPTIONS))
    assert len(records) == 21 and all(isinstance(r, RawRecord) for r in records)  # 1 national + 20 regions
    national, first_region, last = records[0].fields, records[1].fields, records[-1].fields
    # lines 6-9: donneesNationales: casConfirmes: 178, deces: 3, victimes: [3 victims]
    assert national == {
        "date": "2020-03-02",
        "source.nom": "Santé publique France",
        "casConfirmes": 178,
        "deces": 3,
        "@ignored.victimes": "individual victims (3 items)",
        "code": "FR",
    }
    # lines 16-19: - nom: Auvergne-Rhône-Alpes, code: REG-84, casConfirmes: 37
    assert first_region == {
        "date": "2020-03-02",
        "source.nom": "Santé publique France",
        "nom": "Auvergne-Rhône-Alpes",
        "code": "REG-84",
        "casConfirmes": 37,
    }
    assert (last["code"], last["casConfirmes"]) == ("COM-978", 2)  # the last block: Saint-Martin, 2
    assert [r.index for r in records] == list(range(1, 22))


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_ars_bulletin_regional_mapping_and_department_list(fmt: str) -> None:
    records = [r.fields for r in open_records(SAMPLES / f"ars-bretagne_2020-03-20.{fmt}", fmt, OPTIONS)]
    # donneesRegionales is a mapping here (one record), donneesDepartementales a list; no national block
    assert [r["code"] for r in records] == ["REG-53", "DEP-22", "DEP-29", "DEP-35", "DEP-56"]
    assert records[0]["hospitalises"] == 96 and records[0]["source.nom"] == "ARS Bretagne"
    assert records[4]["casConfirmes"] == 134 and records[4]["date"] == "2020-03-20"


def test_unknown_lists_get_a_generic_reason_and_bad_items_are_rejects() -> None:
    doc = {"date": "2020-03-01", "blocks": [{"code": "DEP-01", "cases": [1, 2]}, 7]}
    opts = {"records": [{"path": "blocks"}], "carry": ["date"]}
    records = list(read_records(io.BytesIO(json.dumps(doc).encode()), "json", opts, name="b.json"))
    assert records[0].fields["@ignored.cases"].startswith("a list inside a record, not one of the spec's")
    assert isinstance(records[1], RawReject) and "blocks: item is a int, not a mapping" in records[1].reason


def test_a_document_without_any_block_is_an_error() -> None:
    with pytest.raises(ReaderError, match="no records at any record path"):
        list(read_records(io.BytesIO(b"date: 2020-03-01\nother: {}\n"), "yaml", OPTIONS, name="b.yaml"))


def test_option_problems_are_named() -> None:
    assert nested_options_problems({"carry": ["date"]}) == ["option 'carry' needs the records option"]
    assert "records[0] needs a dotted path" in nested_options_problems({"records": [{"set": {}}]})[0]
    assert nested_options_problems({"records": [{"path": "a"}], "records_path": "x"}) == [
        "records and records_path exclude each other"
    ]
    with pytest.raises(ReaderError, match="records must be a non-empty list"):
        list(read_records(io.BytesIO(b"{}"), "json", {"records": []}, name="b.json"))
