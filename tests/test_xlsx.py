"""wopihost.xlsx: workbooks opened from bytes, ranges read calculated, ranges written, bad files refused."""

from __future__ import annotations

import datetime
import io
import json
import random
import subprocess
import sys
import threading
import zipfile

import openpyxl
import pytest
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

from wopihost.xlsx import WorkbookError, open_workbook, parse_address
from wopihost.xlsx.address import referenced_cells
from wopihost.xlsx.errors import CalculationFailed
from wopihost.xlsx.stack import on_deep_stack

from .cspp_helpers import FIXTURES

LIMIT = 10 << 20


def xlsx(fill=None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for row in ([1, 10, "=A1*B1"], [2, 20, "=A2*B2"], [3, 30, "=A3*B3"], ["=SUM(A1:A3)", None, "=SUM(C1:C3)"]):
        sheet.append(row)
    other = book.create_sheet("My data")
    other["A1"] = "=Sheet1!A4*2"
    if fill:
        fill(book)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def values(book, address, sheet="Sheet1"):
    return book.range(sheet, address)["values"]


# -- reading ---------------------------------------------------------------------------------------------


def test_a_range_reads_calculated_values_and_its_formulas():
    book = open_workbook(xlsx(), LIMIT)
    answer = book.range("Sheet1", "A1:C4")
    assert answer["values"] == [[1, 10, 10], [2, 20, 40], [3, 30, 90], [6, "", 140]]
    assert answer["formulas"][3] == ["=SUM(A1:A3)", "", "=SUM(C1:C3)"]
    assert answer["valueTypes"][0] == ["Double", "Double", "Double"] and answer["valueTypes"][3][1] == "Empty"
    assert (answer["address"], answer["rowCount"], answer["columnCount"], answer["cellCount"]) == (
        "Sheet1!A1:C4",
        4,
        3,
        12,
    )
    assert (answer["rowIndex"], answer["columnIndex"]) == (0, 0)
    assert answer["numberFormat"][0][0] == "General" and answer["text"][3][2] == "140"


def test_a_sheet_with_a_space_in_its_name_reads_across_sheets():
    book = open_workbook(xlsx(), LIMIT)
    answer = book.range("My data", "A1")
    assert answer["values"] == [[12]] and answer["address"] == "'My data'!A1"


def test_worksheets_have_stable_ids_positions_and_are_found_by_id_or_name():
    book = open_workbook(xlsx(), LIMIT)
    sheets = book.worksheets()
    assert [(s.name, s.position, s.visibility) for s in sheets] == [("Sheet1", 0, "Visible"), ("My data", 1, "Visible")]
    assert sheets[0].id.startswith("{") and sheets[0].id.endswith("}") and sheets[0].id != sheets[1].id
    assert open_workbook(xlsx(), LIMIT).worksheets()[0].id == sheets[0].id  # the same from another opening
    assert book.worksheet(sheets[1].id).name == "My data" and book.worksheet("My data").position == 1
    with pytest.raises(WorkbookError) as missing:
        book.worksheet("Nope")
    assert (missing.value.status, missing.value.code) == (404, "itemNotFound")


def test_a_worksheet_is_found_by_its_name_or_id_in_any_case():
    """Excel's sheet names are case-insensitive (a name taken in another case is taken, an address's sheet is
    matched in any case), and so are GUIDs; the worksheet in a URL was found only as spelled: 404."""
    book = open_workbook(xlsx(), LIMIT)
    sheet = book.worksheet("My data")
    assert book.worksheet("MY DATA") == sheet and book.worksheet(sheet.id.lower()) == sheet
    assert book.range("sheet1", "Sheet1!A4")["values"] == [[6]]
    assert book.patch("SHEET1", "A1", values=[[5]])["address"] == "Sheet1!A1"


def test_used_range_is_the_bounding_box_of_values():
    book = open_workbook(xlsx(lambda b: b["Sheet1"].cell(9, 6, "far")), LIMIT)
    assert book.used_range("Sheet1", values_only=True)["address"] == "Sheet1!A1:F9"
    empty = open_workbook(xlsx(lambda b: b.create_sheet("Empty")), LIMIT).used_range("Empty")
    assert empty["address"] == "Empty!A1" and empty["values"] == [[""]]


def test_a_used_range_past_the_range_cell_limit_is_refused():
    """As range() refuses it: a 5 KB file with a value in XFD1048576 would otherwise answer 17 billion cells."""
    book = open_workbook(xlsx(lambda b: b["Sheet1"].cell(10_001, 100, "far")), LIMIT)
    with pytest.raises(WorkbookError) as refused:
        book.used_range("Sheet1", values_only=True)
    assert (refused.value.status, refused.value.code) == (400, "invalidRequest")


def test_dates_read_as_serial_numbers_as_excel_stores_them():
    book = open_workbook(xlsx(lambda b: b["Sheet1"].__setitem__("E1", datetime.date(2026, 1, 1))), LIMIT)
    assert values(book, "E1") == [[46023]]


# TaxRate as Excel files define names; IronCalc takes plain references only and raised its own WorkbookError
# on the others, uncaught (500s on every call)
DEFINED_NAMES = {
    "constant": "0.2",
    "broken_reference": "Sheet1!#REF!",  # a named range whose rows were deleted
    "named_formula": "OFFSET(Sheet1!$A$1,0,0,COUNTA(Sheet1!$A:$A),1)",
    "two_areas": "Sheet1!$A$1,Sheet1!$A$2",
    "nested_too_deep": "(" * 10_000 + "1" + ")" * 10_000,  # its parser overflowed the stack (SIGSEGV)
}


@pytest.mark.parametrize("value", DEFINED_NAMES.values(), ids=DEFINED_NAMES.keys())
def test_a_defined_name_the_model_cannot_take_is_kept_in_the_file(value):
    def named(book):
        book.defined_names["TaxRate"] = DefinedName("TaxRate", attr_text=value)
        book["My data"].defined_names["Local"] = DefinedName("Local", attr_text=value)
        book.defined_names["Inputs"] = DefinedName("Inputs", attr_text="Sheet1!$A$1:$A$3")
        book["Sheet1"]["E1"] = "=SUM(Inputs)"

    book = open_workbook(xlsx(named), LIMIT)
    assert values(book, "E1") == [[6]]  # a plain reference is calculated
    book.patch("Sheet1", "A1", values=[[5]])
    saved = openpyxl.load_workbook(io.BytesIO(book.to_bytes()))
    assert saved.defined_names["TaxRate"].value == value and saved["My data"].defined_names["Local"].value == value
    assert values(open_workbook(book.to_bytes(), LIMIT), "E1") == [[10]]


# -- writing -----------------------------------------------------------------------------------------------


def test_a_patch_of_inputs_recalculates_sum_and_product():
    book = open_workbook(xlsx(), LIMIT)
    answer = book.patch("Sheet1", "A1:B1", values=[[5, 7]])
    assert answer["values"] == [[5, 7]]
    assert values(book, "C1:C4") == [[35], [40], [90], [165]]
    assert values(book, "A4") == [[10]]
    assert values(book, "A1", "My data") == [[20]]


def test_null_leaves_a_cell_and_empty_string_clears_it():
    book = open_workbook(xlsx(), LIMIT)
    book.patch("Sheet1", "A1:A3", values=[[None], [""], [100]])
    assert values(book, "A1:A4") == [[1], [""], [100], [101]]


def test_formulas_and_number_formats_can_be_written():
    book = open_workbook(xlsx(), LIMIT)
    answer = book.patch(
        "Sheet1", "D1:D2", formulas=[["=A1+B1"], ["=IFERROR(1/0, -1)"]], number_format=[["0.00"], [None]]
    )
    assert answer["values"] == [[11], [-1]] and answer["formulas"] == [["=A1+B1"], ["=IFERROR(1/0,-1)"]]
    assert answer["numberFormat"] == [["0.00"], ["General"]]


def test_a_formula_that_parses_is_taken_though_what_it_reads_is_ironcalcs_parse_error():
    """IronCalc calculates #ERROR! for a formula it cannot parse, which a PATCH refuses; a formula that parsed
    but read the text "#ERROR!", or a cell of the file holding a formula IronCalc cannot parse (a table's
    structured reference), was refused as if it could not be parsed."""

    def cells(book):
        book["Sheet1"]["E1"] = "#ERROR!"
        book["Sheet1"]["E2"] = "=SUM(Sales[Amount])"

    book = open_workbook(xlsx(cells), LIMIT)
    answer = book.patch("Sheet1", "F1:F3", formulas=[["=E1"], ['="#ERROR!"'], ["=IFERROR(E2,-1)"]])
    assert answer["formulas"] == [["=E1"], ['="#ERROR!"'], ["=IFERROR(E2,-1)"]]
    assert answer["values"] == [["#ERROR!"], ["#ERROR!"], [-1]]
    assert book.patch("Sheet1", "G1", values=[["=E2*2"]])["formulas"] == [["=E2*2"]]
    with pytest.raises(WorkbookError) as refused:
        book.patch("Sheet1", "G2", formulas=[["=E1+"]])
    assert (refused.value.status, refused.value.code) == (400, "invalidRequest")


def test_the_written_workbook_keeps_what_was_written():
    book = open_workbook(xlsx(), LIMIT)
    book.patch("Sheet1", "A1", values=[[9]])
    book.patch("Sheet1", "D1", formulas=[["=A1*2"]])
    again = open_workbook(book.to_bytes(), LIMIT)
    assert values(again, "A1:D1") == [[9, 10, 90, 18]] and values(again, "A4") == [[14]]


def test_functions_excel_added_later_are_stored_with_their_prefix_and_read_without():
    """Stored bare (openpyxl writes a formula as it is given), =XLOOKUP(...) is a name Excel does not know: #NAME?
    in Excel, the right value here. The file holds _xlfn.XLOOKUP (and _xlfn._xlws.FILTER), as Excel writes them."""
    book = open_workbook(xlsx(), LIMIT)
    written = [
        "=XLOOKUP(2,A1:A3,B1:B3)",
        '=concat("a",A1)',
        "=SUM(FILTER(A1:A3,A1:A3>1))",
        "=STDEV.S(A1:A3)+ABS(-1)",
        "=MYADDIN(1)",
        '="XLOOKUP(1)"',
    ]
    book.patch("Sheet1", "G1:G6", formulas=[[f] for f in written])
    stored = zipfile.ZipFile(io.BytesIO(book.to_bytes())).read("xl/worksheets/sheet1.xml").decode()
    for formula in (
        "_xlfn.XLOOKUP(2,A1:A3,B1:B3)",
        '_xlfn.CONCAT("a",A1)',
        "SUM(_xlfn._xlws.FILTER(A1:A3,A1:A3&gt;1))",
        "_xlfn.STDEV.S(A1:A3)+ABS(-1)",
        "MYADDIN(1)",  # not IronCalc's: maybe an add-in's, which Excel calls by its bare name
        '"XLOOKUP(1)"',  # text, not a call
    ):
        assert f"<f>{formula}</f>" in stored, (formula, stored)
    again = open_workbook(book.to_bytes(), LIMIT)
    assert values(again, "G1:G4") == [[20], ["a1"], [5], [2]]
    assert again.range("Sheet1", "G1:G3")["formulas"] == [
        ["=XLOOKUP(2,A1:A3,B1:B3)"],
        ['=CONCAT("a",A1)'],
        ["=SUM(FILTER(A1:A3,A1:A3>1))"],
    ]


def test_adding_a_worksheet():
    book = open_workbook(xlsx(), LIMIT)
    assert book.add_worksheet("Extra").position == 2
    assert book.add_worksheet(None).name == "Sheet2"
    with pytest.raises(WorkbookError) as taken:
        book.add_worksheet("extra")
    assert (taken.value.status, taken.value.code) == (409, "conflict")
    assert open_workbook(book.to_bytes(), LIMIT).worksheet("Extra").position == 2


def test_a_new_worksheet_without_a_name_gets_one_free_in_any_case():
    """The default name was looked for case-sensitively and then refused case-insensitively: a workbook with
    a sheet named "SHEET2" answered 409 to adding a worksheet without a name."""

    def upper(book):
        book.create_sheet("SHEET2")

    book = open_workbook(xlsx(upper), LIMIT)
    assert book.add_worksheet(None).name == "Sheet3"


@pytest.mark.parametrize("name", ["Notes'", "'Notes", "History", "history", "", "x" * 32, "a/b", "a[1]"])
def test_a_worksheet_name_excel_refuses_is_400(name):
    """Excel's rules for a sheet's name: 1 to 31 characters, none of / \\ ? * : [ ], not beginning or ending
    with an apostrophe, and not History, which Excel keeps for itself. A name ending in an apostrophe, or
    History, was taken and stored: a file Excel does not open as it was written."""
    book = open_workbook(xlsx(), LIMIT)
    with pytest.raises(WorkbookError) as refused:
        book.add_worksheet(name)
    assert (refused.value.status, refused.value.code) == (400, "invalidRequest")
    assert [sheet.name for sheet in book.worksheets()] == ["Sheet1", "My data"]


@pytest.mark.parametrize(
    "patch",
    [
        {"values": [[1, 2]]},  # one row of two for a 2 x 1 range
        {"values": [[1], [2], [3]]},
        {"values": [1, 2]},
        {"formulas": [["=SUM("], ["=1"]]},  # cannot be parsed
        {"values": [[{"a": 1}], [1]]},
        {"values": [[float("nan")], [1]]},
        {"values": [[10**400], [1]]},  # float() of it raised OverflowError
        {"formulas": [[1], [-(10**400)]]},
        {"numberFormat": [[1], [None]]},
        {"numberFormat": [["0." + "0" * 254], [None]]},  # longer than Excel's 255 characters
        {},
    ],
)
def test_a_patch_that_does_not_fit_is_refused(patch):
    book = open_workbook(xlsx(), LIMIT)
    with pytest.raises(WorkbookError) as refused:
        book.patch("Sheet1", "A1:A2", **{"number_format" if k == "numberFormat" else k: v for k, v in patch.items()})
    assert (refused.value.status, refused.value.code) == (400, "invalidRequest")


def test_a_number_format_longer_than_excels_in_a_file_is_kept_and_shows_the_value_as_general():
    """IronCalc panicked (a BaseException, which no handler catches) showing a value in a format of more than
    65,535 decimals; Excel's own limit is 255 characters."""
    long_format = "0." + "0" * 70_000

    def formatted(book):
        book["Sheet1"]["A1"].number_format = long_format

    book = open_workbook(xlsx(formatted), LIMIT)
    answer = book.range("Sheet1", "A1")
    assert answer["values"] == [[1]] and answer["text"] == [["1"]] and answer["numberFormat"] == [[long_format]]
    assert open_workbook(book.to_bytes(), LIMIT).range("Sheet1", "A1")["numberFormat"] == [[long_format]]
    at_the_limit = "0." + "0" * 253
    written = book.patch("Sheet1", "B1", number_format=[[at_the_limit]])
    assert written["numberFormat"] == [[at_the_limit]] and written["text"] == [["10." + "0" * 253]]


def test_a_formula_within_excels_limits_is_calculated():
    book = open_workbook(xlsx(), LIMIT)
    nested = "=" + "(" * 64 + "1" + ")" * 64
    quoted = '=LEN("' + "(" * 100 + '")'  # parentheses in text do not nest
    assert book.patch("Sheet1", "E1:F1", formulas=[[nested, quoted]])["values"] == [[1, 100]]


@pytest.mark.parametrize(
    "formula",
    ["=" + "(" * 65 + "1" + ")" * 65, "=" + "ABS(" * 10_000 + "1" + ")" * 10_000, "=" + "-" * 8192 + "1"],
)
def test_a_formula_past_excels_limits_is_refused_as_input_and_in_a_file(formula):
    """IronCalc's recursive parser overflowed the stack on the last two: a SIGSEGV, not an exception."""
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(), LIMIT).patch("Sheet1", "E1", formulas=[[formula]])
    assert (refused.value.status, refused.value.code, refused.value.inner) == (400, "invalidRequest", None)
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(lambda b: b["Sheet1"].__setitem__("E1", formula)), LIMIT)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


# Formulas naming ranges past four whole columns, and an array formula filling more: IronCalc builds such ranges
# cell by cell. Without the limit the first asked for 1.5 GB at once and, refused it, aborted the process (a Rust
# allocation failure is no exception), where a worker would be killed or the host run out of memory. Run in a
# process of its own, held to 2 GiB of address space, so that a failure kills only that process. Each workbook
# defines the name Block, four whole columns.
PAST_FOUR_COLUMNS = """
import io, json, resource, sys
import openpyxl
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula
from wopihost.xlsx import WorkbookError, open_workbook

resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

def xlsx(cell, value):
    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.defined_names["Block"] = DefinedName("Block", attr_text="Sheet1!$A:$D")
    book.active["A1"] = 1
    book.active[cell] = value
    data = io.BytesIO()
    book.save(data)
    return data.getvalue()

def refusal(call):
    try:
        call()
    except WorkbookError as exc:
        return [exc.status, exc.inner]
    return "taken"

answers = []
for formula in json.loads(sys.argv[1]):
    book = open_workbook(xlsx("A2", 2), 10 << 20)
    answers.append(refusal(lambda: book.patch("Sheet1", "C3", formulas=[[formula]])))
    answers.append(refusal(lambda: open_workbook(xlsx("C3", formula), 10 << 20)))
answers.append(refusal(lambda: open_workbook(xlsx("C3", ArrayFormula("C3:XFD1048576", "=1")), 10 << 20)))
answers.append(refusal(lambda: open_workbook(xlsx("C3", "=COUNT(Block)"), 10 << 20)))
print(json.dumps(answers))
"""
HUGE_RANGES = [
    "=COUNT(D1:XFD1048576)",
    "=COUNTBLANK(Sheet1!$D:$H)",
    "=MAX(d1:xfd9)+COUNT(1:300)",
    "=CONCAT(D1:D2:XFD1048576)",
    "=SUMPRODUCT(D:E*F:G*H:H)",
    # ranges made as the formula is calculated, which IronCalc builds as it builds written ones
    '=COUNT(INDIRECT("D1:XFD1048576"))',
    "=COUNT(offset(D1,0,0,1048576,16000))",
    # a defined name within the limit, used five times: each use counts
    "=COUNT(Block,block,BLOCK,Block,Block)",
]


def test_a_formula_naming_ranges_past_four_whole_columns_is_refused_as_input_and_in_a_file():
    child = subprocess.run(
        [sys.executable, "-c", PAST_FOUR_COLUMNS, json.dumps(HUGE_RANGES)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    refused, unsupported = [400, None], [400, "unsupportedWorkbook"]
    assert json.loads(child.stdout) == [refused, unsupported] * len(HUGE_RANGES) + [unsupported, "taken"]


def test_a_formula_naming_up_to_four_whole_columns_is_calculated():
    book = open_workbook(xlsx(), LIMIT)
    formulas = ["=SUM(A:D)", "=COUNTIFS(A:A,1,B:B,10)", '=LEN("D1:XFD1048576")', "=SUM('My data'!A1:B2)", "=SUM(2:3)"]
    assert book.patch("Sheet1", "E1:I1", formulas=[formulas])["values"] == [[352, 1, 13, 12, 185]]


@pytest.mark.parametrize(
    "formula, cells",
    [
        ("=SUM(D:D)", 1_048_576),
        ("=COUNT(Sheet1!$D$1:$XFD$1048576)", 1_048_573 * 16_381 + 16_381 * 3),
        ("=SUM(1:4)+A1:b2", 4 * 16_384 + 4),
        ("=A1:A3:C2", 9),
        ("=SUM(A1 : B2)", 4),
        ("=\"A1:XFD1048576\"&'It''s A1:B2'!A1:A10", 10),
        ("=SUM(Sheet1:Sheet3!A1)+LOG10(A1)+TAX2020", 0),
    ],
)
def test_the_cells_a_formulas_ranges_span(formula, cells):
    assert referenced_cells(formula) == cells


@pytest.mark.parametrize("ref", ["garbage", "A0:B2"])
def test_an_array_formula_filling_no_range_makes_the_workbook_unsupported(ref):
    """A damaged file's ref was a ValueError, a 500."""
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(lambda b: b["Sheet1"].__setitem__("E1", ArrayFormula(ref, "=1"))), LIMIT)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


def test_a_part_of_an_array_formula_cannot_be_changed():
    """As Excel refuses it. A value written into one was stored in the file beside the array, where the calculating
    model kept the array: the write answered #VALUE!, and the workbook opened again read differently."""

    def array(book):
        book["Sheet1"]["E1"] = ArrayFormula("E1:E2", "=A1:A2*10")

    book = open_workbook(xlsx(array), LIMIT)
    assert values(book, "E1:E2") == [[10], [20]]
    for address, grid in (("E2", [[5]]), ("D1:F1", [[None, "=1", None]]), ("E1:E2", [[""], [""]])):
        with pytest.raises(WorkbookError) as refused:
            book.patch("Sheet1", address, values=grid)
        assert refused.value.status == 400 and "array formula" in str(refused.value)
    assert book.patch("Sheet1", "D1:F2", values=[[7, None, 8], [9, None, None]])["values"][0] == [7, 10, 8]
    assert book.patch("Sheet1", "E1:E2", number_format=[["0.0"], ["0.0"]])["text"] == [["10.0"], ["20.0"]]
    reopened = open_workbook(book.to_bytes(), LIMIT)
    assert values(reopened, "D1:F2") == values(book, "D1:F2") == [[7, 10, 8], [9, 20, ""]]


def test_the_array_formulas_a_write_may_not_change_part_of_are_each_sheets_own_for_good():
    """A PATCH finds the array formulas it may not write into among those the workbook was opened with, kept for
    each sheet, where it scanned every cell of the sheet for them: they stay refused through every write, a new
    sheet and the workbook saved and opened again, on their own sheet only."""

    def arrays(book):
        book["Sheet1"]["E1"] = ArrayFormula("E1:E2", "=A1:A2*10")
        book["My data"]["B2"] = ArrayFormula("B2:C2", "=Sheet1!A1:B1")

    book = open_workbook(xlsx(arrays), LIMIT)
    for _ in range(2):
        for sheet, address in (("Sheet1", "E2"), ("My data", "C2"), ("My data", "A1:B2")):
            with pytest.raises(WorkbookError) as refused:
                book.patch(sheet, address, values=[[1] * parse_address(address).columns] * parse_address(address).rows)
            assert refused.value.status == 400 and "array formula" in str(refused.value), (sheet, address)
        assert "'My data'!B2:C2 is an array formula (at B2)" in str(refused.value)
        # the other sheet's cells at the same places, and the cells beside each array, are written
        assert book.patch("My data", "E1:E2", values=[[5], [6]])["values"] == [[5], [6]]
        assert book.patch("Sheet1", "B2:C2", values=[[3, 4]])["values"] == [[3, 4]]
        assert book.patch("Sheet1", "B1", values=[[3]])["values"] == [[3]]
        assert book.patch("Sheet1", "F1:F2", formulas=[["=E1+1"], ["=E2+1"]])["values"] == [[11], [21]]
        book.add_worksheet(None)
        book = open_workbook(book.to_bytes(), LIMIT)
    assert book.range("My data", "B2:C2")["values"] == [[1, 3]]  # the array reads what was written beside it


def test_an_error_cell_holding_a_formula_is_not_parsed():
    def error(book):
        book["Sheet1"]["E1"] = "=" + "(" * 10_000 + "1" + ")" * 10_000
        book["Sheet1"]["E1"].data_type = "e"
        book["Sheet1"]["E2"] = "#N/A"
        book["Sheet1"]["E2"].data_type = "e"

    book = open_workbook(xlsx(error), LIMIT)
    assert book.range("Sheet1", "E2")["valueTypes"] == [["Error"]]


LAMBDAS = {
    "applied": "=LAMBDA(x,x+1)(2)",
    # calls itself as deep as its argument says: with 100000, IronCalc overflowed any stack (SIGSEGV)
    "recursive": "=LAMBDA(f,n,IF(n=0,0,f(f,n-1)+1))(LAMBDA(f,n,IF(n=0,0,f(f,n-1)+1)),10)",
    "as Excel stores it": "=_xlfn.LAMBDA(_xlpm.x,_xlpm.x+1)(2)",
    "lower case, spaced": "=lambda (x,x+1)(2)",
    "in MAP": "=SUM(MAP(A1:A3,LAMBDA(v,v*2)))",
}


@pytest.mark.parametrize("formula", LAMBDAS.values(), ids=LAMBDAS.keys())
def test_a_lambda_is_refused_as_input_and_in_a_file(formula):
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(), LIMIT).patch("Sheet1", "E1", formulas=[[formula]])
    assert (refused.value.status, refused.value.code, refused.value.inner) == (400, "invalidRequest", None)
    assert "LAMBDA" in str(refused.value)
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(lambda b: b["Sheet1"].__setitem__("E1", formula)), LIMIT)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


def test_a_lambda_defined_name_stays_out_of_the_model():
    """A cell calling it, itself no LAMBDA, recursed as deep as it said (=F(100000) overflowed the stack)."""
    recursive = "_xlfn.LAMBDA(_xlpm.n,IF(_xlpm.n=0,0,F(_xlpm.n-1)+1))"

    def named(book):
        book.defined_names["F"] = DefinedName("F", attr_text=recursive)
        book["Sheet1"]["E1"] = "=F(10)"

    book = open_workbook(xlsx(named), LIMIT)
    assert values(book, "E1") == [["#NAME?"]]
    assert openpyxl.load_workbook(io.BytesIO(book.to_bytes())).defined_names["F"].value == recursive


def test_text_naming_a_lambda_is_only_text():
    book = open_workbook(xlsx(), LIMIT)
    assert book.patch("Sheet1", "E1", values=[["LAMBDA(x, x) is not calculated here"]])["valueTypes"] == [["String"]]


# Runs on a thread of 8 MiB, as gunicorn's are, with the limit on a formula's length lifted: 12,000 levels of
# `^` need about 14 MiB, where 5,400 (10,800 characters) overflowed 8 MiB, killing the process (SIGSEGV).
DEEPER_THAN_8_MIB = """
import io, json, threading
import openpyxl
from wopihost.xlsx import open_workbook, workbook

workbook.MAX_FORMULA = 1 << 20
formula = "=1" + "^1" * 12_000
book = openpyxl.Workbook()
book.active.title = "Sheet1"
book.active["A1"] = formula
data = io.BytesIO()
book.save(data)
answers = []

def call():
    opened = open_workbook(data.getvalue(), 10 << 20)
    answers.append(opened.range("Sheet1", "A1")["values"])
    answers.append(opened.patch("Sheet1", "B1", formulas=[[formula]])["values"])

threading.stack_size(8 << 20)
thread = threading.Thread(target=call)
thread.start()
thread.join()
print(json.dumps(answers))
"""


def test_a_formula_deeper_than_a_threads_stack_holds_is_opened_written_and_read():
    """In a process of its own: where it overflows, the whole process dies."""
    child = subprocess.run([sys.executable, "-c", DEEPER_THAN_8_MIB], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert json.loads(child.stdout) == [[[1]], [[1]]]


def test_calls_from_several_threads_at_once_each_get_their_answer_and_leave_nothing_behind():
    """Each call runs on a deep thread of its own, so one slow workbook holds up no other; what a call raises
    is the caller's, as it was raised."""
    books = [open_workbook(xlsx(), LIMIT) for _ in range(4)]
    answers: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            answers[n] = books[n].patch("Sheet1", "A1", values=[[n]])["values"]
            books[n].patch("Sheet1", "A1", formulas=[["=" + "(" * 65 + "1" + ")" * 65]])
        except WorkbookError as exc:
            answers[-n - 1] = (exc.status, exc.code, type(exc))

    callers = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert [answers[n] for n in range(4)] == [[[0]], [[1]], [[2]], [[3]]]
    assert all(answers[-n - 1] == (400, "invalidRequest", WorkbookError) for n in range(4))
    assert [values(book, "A4") for book in books] == [[[5]], [[6]], [[7]], [[8]]]
    assert threading.stack_size() == 0  # the process's setting for new threads is as it was
    assert not [t for t in threading.enumerate() if t.name == "wopihost-xlsx"]


def test_a_panic_inside_ironcalc_is_an_exception_not_a_dropped_request():
    """A Rust panic reaches Python as pyo3's PanicException, a BaseException: past Flask's and gunicorn's
    handlers the request would end with no answer at all."""
    import ironcalc

    @on_deep_stack
    def show_in_a_format_ironcalc_cannot_print() -> str:
        model = ironcalc.create("workbook", "en", "UTC")
        model.set_user_input(0, 1, 1, "1")
        style = model.get_cell_style(0, 1, 1)
        style["num_fmt"] = "0." + "0" * 70_000  # more decimals than its formatter takes
        model.set_cell_style(0, 1, 1, style)
        return model.get_formatted_cell_value(0, 1, 1)

    with pytest.raises(CalculationFailed, match="^the workbook cannot be calculated") as refused:
        show_in_a_format_ironcalc_cannot_print()
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


def test_a_formula_ironcalc_panics_on_is_refused_400():
    """=EDATE(1,1e10) made IronCalc panic: a 500 for a formula a client sent, and for every call on a file that
    held one."""
    book = open_workbook(xlsx(), LIMIT)
    with pytest.raises(CalculationFailed):
        book.patch("Sheet1", "E1", formulas=[["=EDATE(1,1e10)"]])


# -- what a write keeps of the file ------------------------------------------------------------------------


def cells_of(data: bytes, sheet: str = "xl/worksheets/sheet1.xml") -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(sheet).decode()


def test_a_write_keeps_every_other_number_as_it_was():
    """openpyxl made datetimes of date-formatted numbers as it read them and saved those back, and saved every
    number with 16 significant digits: a write to one cell changed cells nobody wrote, in the file for good."""

    def fill(book):
        sheet = book["Sheet1"]
        for row, number in enumerate([60, 45000.123456789, 1e10, 2958466], start=1):
            sheet.cell(row, 5, number).number_format = "yyyy-mm-dd hh:mm:ss"  # Excel's 1900-02-29 is serial 60
        for row, number in enumerate([0.30000000000000004, 123456789.12345679, 2.0**60], start=1):
            sheet.cell(row, 6, number)

    book = open_workbook(xlsx(fill), LIMIT)
    expected = [[60, 0.30000000000000004], [45000.123456789, 123456789.12345679], [1e10, 2.0**60], [2958466, ""]]
    assert values(book, "E1:F4") == expected
    book.patch("Sheet1", "A1", values=[[5]])
    saved = book.to_bytes()
    again = open_workbook(saved, LIMIT)
    assert values(again, "E1:F4") == expected and values(again, "A1") == [[5]]
    assert '<c r="E1" s="1" t="n"><v>60</v></c>' in cells_of(saved)
    assert "<v>0.30000000000000004</v>" in cells_of(saved)


def test_a_write_keeps_rich_text():
    from openpyxl.cell.rich_text import CellRichText, TextBlock
    from openpyxl.cell.text import InlineFont

    def fill(book):
        book["Sheet1"]["E1"] = CellRichText("plain ", TextBlock(InlineFont(b=True, color="FF0000"), "bold red"))

    book = open_workbook(xlsx(fill), LIMIT)
    assert values(book, "E1") == [["plain bold red"]]
    book.patch("Sheet1", "A1", values=[[5]])
    cell = cells_of(book.to_bytes())
    assert "<b" in cell and "FF0000" in cell and "bold red" in cell


def with_parts(data: bytes, parts: dict[str, bytes], types: str) -> bytes:
    """`data` with more parts, and content types for them (XML of <Default>/<Override>)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "[Content_Types].xml":
                body = body.replace(b"</Types>", types.encode() + b"</Types>")
            target.writestr(info, body)
        for name, body in parts.items():
            target.writestr(name, body)
    return out.getvalue()


@pytest.mark.parametrize(
    "parts, types",
    [
        (
            {"xl/vbaProject.bin": b"macros"},
            '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>',
        ),
        ({"xl/media/image1.png": b"\x89PNG"}, '<Default Extension="png" ContentType="image/png"/>'),
        (
            {"customXml/item1.xml": b"<labels/>"},
            '<Override PartName="/customXml/item1.xml" ContentType="application/xml"/>',
        ),
    ],
    ids=["macros", "a picture", "custom XML"],
)
def test_a_write_that_would_drop_part_of_the_file_is_refused(parts, types):
    """A write saved the file through openpyxl, which keeps no macros, pictures, shapes or custom XML (sensitivity
    labels): a one-cell write dropped them, and turned an .xlsm into a file Excel refuses to open. Such a file can
    be read, and a write to it is refused (nothing stored)."""
    book = open_workbook(with_parts(xlsx(), parts, types), LIMIT)
    assert values(book, "C1") == [[10]]
    book.patch("Sheet1", "A1", values=[[5]])
    with pytest.raises(WorkbookError, match="cannot keep when it saves a change") as refused:
        book.to_bytes()
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")
    assert next(iter(parts)) in str(refused.value)  # named by its part


SHAPE = (
    b'<xdr:twoCellAnchor xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"'
    b' xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
    b"<xdr:from><xdr:col>1</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>10</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>"
    b"<xdr:to><xdr:col>4</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>14</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:to>"
    b'<xdr:sp macro="" textlink=""><xdr:nvSpPr><xdr:cNvPr id="9" name="TextBox 1"/><xdr:cNvSpPr txBox="1"/></xdr:nvSpPr>'
    b'<xdr:spPr><a:prstGeom prst="rect"><a:avLst/></a:prstGeom></xdr:spPr><xdr:txBody><a:bodyPr/><a:p><a:r>'
    b"<a:t>approved by finance</a:t></a:r></a:p></xdr:txBody></xdr:sp><xdr:clientData/></xdr:twoCellAnchor>"
)


def test_a_write_that_would_drop_a_shape_beside_a_chart_is_refused():
    """openpyxl keeps a drawing that holds a chart, without the shapes beside it: the drawing's kind survived the
    save, so the check of kinds of part let the write drop the text box."""
    from openpyxl.chart import BarChart, Reference

    def chart(book):
        sheet = book["Sheet1"]
        bars = BarChart()
        bars.add_data(Reference(sheet, min_col=2, min_row=1, max_row=3))
        sheet.add_chart(bars, "E2")

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx(chart))) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "xl/drawings/drawing1.xml":
                body = body.replace(b"</wsDr>", SHAPE + b"</wsDr>")
            target.writestr(info, body)
    book = open_workbook(out.getvalue(), LIMIT)
    book.patch("Sheet1", "A1", values=[[5]])
    with pytest.raises(WorkbookError, match="1 of the objects of its drawings"):
        book.to_bytes()
    assert open_workbook(book.to_bytes(whole=False), LIMIT)  # a session's copy may lose it
    charted = open_workbook(xlsx(chart), LIMIT)  # a chart alone openpyxl keeps: written
    charted.patch("Sheet1", "A1", values=[[5]])
    assert values(open_workbook(charted.to_bytes(), LIMIT), "A1") == [[5]]


def test_a_write_to_a_workbook_excel_saved_keeps_its_parts():
    """What a save may leave out (the calculation chain, printer settings, the thumbnail) refuses nothing."""
    excel = (FIXTURES / "NonZeroByteExcel" / "Version1" / "MainContent" / "FileStream").read_bytes()
    thumbnail = '<Default Extension="jpeg" ContentType="image/jpeg"/>'
    book = open_workbook(with_parts(excel, {"docProps/thumbnail.jpeg": b"\xff\xd8"}, thumbnail), LIMIT)
    sheet = book.worksheets()[0].name
    book.patch(sheet, "Z1", values=[[5]])
    assert values(open_workbook(book.to_bytes(), LIMIT), "Z1", sheet) == [[5]]


# -- addresses ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A1", (None, 1, 1, 1, 1)),
        ("$B$2:c5", (None, 2, 2, 5, 3)),
        ("Sheet1!A1:B2", ("Sheet1", 1, 1, 2, 2)),
        ("'My data'!C3", ("My data", 3, 3, 3, 3)),
        ("'it''s'!A1", ("it's", 1, 1, 1, 1)),
        ("B2:A1", (None, 1, 1, 2, 2)),
    ],
)
def test_addresses(text, expected):
    address = parse_address(text)
    assert (address.sheet, address.first_row, address.first_column, address.last_row, address.last_column) == expected


@pytest.mark.parametrize("text", ["", "A", "1", "A0", "XFE1", "A1048577", "A1:", "A1:B", "!A1", "A1;B2", "R1C1"])
def test_malformed_addresses(text):
    with pytest.raises(ValueError):
        parse_address(text)
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(), LIMIT).range("Sheet1", text)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "address, names",
    [
        ("'Bob''s data'!A1", ("Bob's data", "Bob''s data")),  # Excel's quoting; or a name of two apostrophes
        ("'Bob's data'!A1", ("Bob's data",)),  # as msgraph-sdk passes it on, the apostrophe not doubled
        ("'My data'!A1", ("My data",)),
        ("'a!b'!A1", ("a!b",)),  # a sheet's name may hold "!"
    ],
)
def test_a_quoted_sheet_is_read_as_excel_writes_it_or_as_it_came(address, names):
    assert parse_address(address).sheet_names == names


@pytest.mark.parametrize("text", ["'Bob's data!A1", "Bob's data'!A1", "'!A1", "''!A1", "'Bob's data'A1"])
def test_a_sheet_quoted_at_one_end_only_or_empty_is_malformed(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_a_sheet_named_with_apostrophes_is_reached_by_its_quoted_name_either_way():
    def sheets(book):
        book.create_sheet("Bob's data")["A1"] = "one"
        book.create_sheet("Bob''s")["A1"] = "two"  # two apostrophes, which Excel quotes as 'Bob''''s'

    book = open_workbook(xlsx(sheets), LIMIT)
    for address in ("'Bob''s data'!A1", "'Bob's data'!A1", "'bob''S DATA'!A1"):
        assert book.range("Bob's data", address)["values"] == [["one"]], address
    for address in ("'Bob''''s'!A1", "'Bob''s'!A1"):
        assert book.range("Bob''s", address)["values"] == [["two"]], address
    with pytest.raises(WorkbookError) as refused:
        book.range("Bob's data", "'Bob''''s data'!A1")  # Bob''s data: neither reading names this sheet
    assert refused.value.status == 400


def test_an_address_on_another_sheet_or_too_large_is_refused():
    book = open_workbook(xlsx(), LIMIT)
    for address in ("Other!A1", "A1:Z100000"):
        with pytest.raises(WorkbookError) as refused:
            book.range("Sheet1", address)
        assert refused.value.status == 400


# -- files that are not workbooks ----------------------------------------------------------------------------


def zipped(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name.replace("__", "/"), data)
    return out.getvalue()


@pytest.mark.parametrize(
    "data, status",
    [
        (b"plain text, not a zip", 400),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, 415),  # a legacy .xls
        (zipped(word__document_xml=b"<w/>"), 400),  # a zip, but a .docx's parts
        (zipped(xl__workbook_xml=b"<not a workbook"), 400),
        (xlsx()[:2000], 400),  # cut off
        (zipped(xl__workbook_xml=b"<a/>", bomb=b"\x00" * (40 << 20)), 400),  # expands far past the limit
    ],
)
def test_files_that_are_not_workbooks_are_refused_clearly(data, status):
    with pytest.raises(WorkbookError) as refused:
        open_workbook(data, 1 << 20)
    assert refused.value.status == status and refused.value.inner == "unsupportedWorkbook"


def test_a_workbook_that_expands_far_past_its_own_size_is_refused():
    """Within 4 times the limit, but 100 times its size: a 40 KB such workbook took 400 MiB to open."""
    bomb = io.BytesIO(xlsx())
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", b"\x00" * (2 << 20))
    assert len(bomb.getvalue()) < 20_000
    with pytest.raises(WorkbookError) as refused:
        open_workbook(bomb.getvalue(), 1 << 20)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


def test_a_workbook_whose_xml_is_more_than_four_times_the_limit_is_refused():
    """Memory follows the XML: a 1 MiB limit opens at most 4 MiB of it, whatever the file's ratio."""
    rng = random.Random(1)
    text = " ".join(rng.choice(["North", "South", "East", "West", "12", "7.5"]) for _ in range(1_000_000))
    padded = io.BytesIO(xlsx())
    with zipfile.ZipFile(padded, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/notes.txt", text)
    assert len(padded.getvalue()) < 1 << 20 and len(text) < 32 * len(padded.getvalue())
    with pytest.raises(WorkbookError) as refused:
        open_workbook(padded.getvalue(), 1 << 20)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")
    assert open_workbook(padded.getvalue(), 2 << 20).worksheet("Sheet1")


def test_a_workbook_of_repetitive_data_still_opens():
    """It expands 22 times, as far as ordinary workbooks go."""
    book = open_workbook(xlsx(lambda b: [b["Sheet1"].append(["North"] * 10) for _ in range(3000)]), LIMIT)
    assert values(book, "A3004") == [["North"]]


@pytest.mark.parametrize("number", ["1" + "0" * 400, "1e400"])
def test_a_stored_number_excel_cannot_store_makes_the_workbook_unsupported(number):
    with zipfile.ZipFile(io.BytesIO(xlsx(lambda b: b["Sheet1"].__setitem__("E1", 7)))) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(b"<v>7</v>", f"<v>{number}</v>".encode())
    data = zipped(**{name.replace("/", "__"): part for name, part in parts.items()})
    with pytest.raises(WorkbookError) as refused:
        open_workbook(data, LIMIT)
    assert (refused.value.status, refused.value.inner) == (400, "unsupportedWorkbook")


def test_a_workbook_over_the_limit_is_413():
    with pytest.raises(WorkbookError) as refused:
        open_workbook(xlsx(), 1000)
    assert refused.value.status == 413
