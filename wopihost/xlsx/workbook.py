"""One workbook, opened from .xlsx bytes: its worksheets, ranges read with calculated values, ranges written.

openpyxl holds the file (everything it was, styles included) and IronCalc a model of its cells that
calculates. Every write goes to both, then the model recalculates, so a read always sees results.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import math
import re
import sys
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from xml.etree import ElementTree

import ironcalc
import openpyxl
import openpyxl.cell._writer
from openpyxl.compat import safe_string
from openpyxl.formula.tokenizer import Token, Tokenizer, TokenizerError
from openpyxl.reader.excel import ExcelReader
from openpyxl.utils import FORMULAE
from openpyxl.utils.datetime import to_excel
from openpyxl.worksheet.formula import ArrayFormula, DataTableFormula

from ..text import NOT_XML
from .address import Address, parse_address, referenced_cells
from .errors import WorkbookError, bad_request, too_large, unsupported
from .stack import deep, on_deep_stack

MAX_RANGE_CELLS = 1_000_000  # one read or write; the answer is JSON of every cell
# xlsx parts are deflated XML, of which openpyxl holds 10 to 25 bytes in memory per byte. Ordinary workbooks
# expand 4 to 22 times (repetitive data the most). Past MAX_EXPANSION times its own size a file is refused
# before it is read (a "zip bomb": 40 KB took 400 MiB), and past MAX_XML times the size limit, which keeps one
# workbook within the memory docs/graph.md §10.3 gives it (50 MiB per MiB of the limit, 90 at worst).
MAX_EXPANSION = 32
MAX_XML = 4
# Excel's limits for a formula. IronCalc parses and calculates a formula recursively: one far past them (10,000
# parentheses, thousands of &) overflows even the deep stack it runs on (stack.py), which kills the whole worker,
# not just the call.
MAX_FORMULA = 8192
MAX_NESTING = 64
# What the ranges one formula names may span together: four whole columns (SUMIFS(D:D,A:A,x,B:B,y), a lookup in
# A:D). IronCalc builds some functions' ranges cell by cell, some 200 bytes each: at this limit one formula took
# up to 900 MiB and 15 s (=A2:D1048576+1 spilling); COUNT(D1:XFD1048576) asked for gigabytes at once and, refused
# them, aborted the process (a Rust allocation failure is no exception). Refused here at once, rather than after a
# call's process has run out of its memory or time (calculator.py), which no reading of a formula can promise.
MAX_FORMULA_CELLS = 4 * 1_048_576
# Excel's limit for a number format. IronCalc panics (a BaseException, past every handler) showing a value in a
# format of more than 65,535 decimals ("0." and 70,000 zeros).
MAX_NUMBER_FORMAT = 255
# A LAMBDA can call itself, by a defined name or passed to itself, as deep as its argument says, and IronCalc
# recurses with it: `=LAMBDA(f,n,IF(n=0,0,f(f,n-1)))(LAMBDA(f,n,IF(n=0,0,f(f,n-1))),100000)` overflows any stack.
# Looked for in text too: where this host and IronCalc's lexer differ on what is quoted, it is still found.
_LAMBDA = re.compile(r"LAMBDA\s*\(", re.IGNORECASE)  # stored in a file as _xlfn.LAMBDA(
# INDIRECT and OFFSET make a range from what they calculate, which no reading of the formula can bound, and
# IronCalc builds it cell by cell as it builds a written one: =COUNT(INDIRECT("D1:XFD1048576")) aborts the worker.
_UNBOUNDED = re.compile(r"(?:INDIRECT|OFFSET)\s*\(", re.IGNORECASE)
# Functions Excel added after the file format's first edition ("future functions", MS-XLSX 2.2.3) are stored with
# a prefix: stored bare (=XLOOKUP(...), as a client writes it), Excel reads a name it does not know and shows
# #NAME?. FILTER and SORT take a second one. IronCalc reads both spellings and answers formulas without them.
_FUTURE, _WORKSHEET_FUTURE = "_xlfn.", "_xlfn._xlws."
_WORKSHEET_FUTURES = frozenset({"FILTER", "SORT"})
_KNOWN: dict[str, bool] = {}  # function name (upper case) -> whether IronCalc calculates it
_SHEET_IDS = uuid.UUID("3f1c9b9e-5b8a-4a59-9d3f-6c1b2a7e0d11")  # namespace of worksheet ids
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of legacy .xls (and of encrypted .xlsx)
_TYPES = {1: "Double", 2: "String", 4: "Boolean", 16: "Error"}  # IronCalc's CellType -> Graph's valueTypes


def not_found(message: str) -> WorkbookError:
    return WorkbookError(404, "itemNotFound", message)


@on_deep_stack
def open_workbook(data: bytes, limit: int) -> Workbook:
    """The workbook in `data`; WorkbookError (400/413/415) if it is not one this host can open."""
    if len(data) > limit:
        raise too_large(len(data), limit)
    if data.startswith(_OLE):
        raise unsupported("this is a legacy .xls (or encrypted) workbook; only .xlsx is supported", 415)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_EXPANSION * len(data):
                raise unsupported(f"the workbook expands to more than {MAX_EXPANSION} times its size")
            if unpacked > MAX_XML * max(limit, 1 << 20):
                raise unsupported("the workbook expands to more than this host opens (WOPIHOST_MAX_WORKBOOK_SIZE)")
            if "xl/workbook.xml" not in archive.namelist():
                raise unsupported("the file is a zip archive but not a workbook")
    except zipfile.BadZipFile:
        raise unsupported("the file is not a workbook (not a zip archive)") from None
    try:
        reader = _Reader(io.BytesIO(data), rich_text=True)
        reader.read()
        kept = _parts(data)
    except WorkbookError:
        raise
    except Exception as exc:  # openpyxl raises many kinds for a damaged file; each means the same here
        raise unsupported(f"the workbook cannot be read: {type(exc).__name__}") from None
    try:
        return Workbook(reader.wb, kept)
    except ironcalc.WorkbookError as exc:  # what IronCalc refuses of a file openpyxl read (a 40-character sheet name)
        raise unsupported(f"the workbook cannot be calculated: {str(exc)[:200]}") from None


@dataclass(frozen=True)
class Sheet:
    id: str
    name: str
    position: int
    visibility: str

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "position": self.position, "visibility": self.visibility}


class Workbook:
    """Every method that reaches the model runs on a deep stack (stack.py); `model` refuses any other thread."""

    def __init__(self, book: openpyxl.Workbook, kept: _Parts | None = None):
        self.book = book
        self._kept = kept or _Parts({}, 0)  # what a write must keep of the file
        self._model = ironcalc.create("workbook", "en", "UTC")
        self._names: dict[str, int] = {}  # each defined name the model has (lower case): the cells it spans
        # Each sheet's array formulas (its title: {anchor: the cells it fills}), as _mirror met them, so that a PATCH
        # need not scan every cell of the sheet for them (openpyxl's array_formulae does). No write changes them: a
        # PATCH touching one is refused, and what it writes is never one.
        self._arrays: dict[str, dict[str, Address]] = {}
        for index, sheet in enumerate(book.worksheets):
            if index:
                self.model.add_sheet(sheet.title)
            else:
                self.model.rename_sheet(0, sheet.title)
        for name, defined in book.defined_names.items():
            self._define(name, None, defined.value)
        for index, sheet in enumerate(book.worksheets):
            for name, defined in sheet.defined_names.items():
                self._define(name, index, defined.value)
            for cell in list(sheet._cells.values()):
                if cell.value is not None:
                    self._mirror(index, cell)
        self.model.evaluate()

    @property
    def model(self) -> ironcalc.Model:
        if not deep():  # a method left off on_deep_stack is a 500 here, not a SIGSEGV on the first deep formula
            raise RuntimeError("IronCalc called off a deep stack: the method needs @on_deep_stack")
        return self._model

    # -- worksheets -----------------------------------------------------------------------

    def worksheets(self) -> list[Sheet]:
        return [self._sheet(index, sheet) for index, sheet in enumerate(self.book.worksheets)]

    def worksheet(self, key: str) -> Sheet:
        """By id (`{...}`, braces optional) or by name, as Graph addresses them, in any case as Excel matches
        names (and GUIDs compare); 404 if there is none."""
        sheets, folded = self.worksheets(), key.casefold()
        for sheet in sheets:  # as spelled first: a file made elsewhere may hold names differing in case only
            if key == sheet.name:
                return sheet
        for sheet in sheets:
            if folded in (sheet.name.casefold(), sheet.id.strip("{}").casefold(), sheet.id.casefold()):
                return sheet
        raise not_found(f"the workbook has no worksheet {key[:60]!r}")

    @on_deep_stack
    def add_worksheet(self, name: str | None) -> Sheet:
        if name is None:  # the first SheetN free, in any case: a name taken in another case is taken
            taken = {existing.casefold() for existing in self.book.sheetnames}
            name = next(f"Sheet{n}" for n in range(1, 10_000) if f"sheet{n}" not in taken)
        # Excel's rules: a file holding a name they refuse is one Excel does not open as it was written
        if (
            not name
            or len(name) > 31
            or any(ch in name for ch in "[]:*?/\\")
            or name.startswith("'")
            or name.endswith("'")
            or name.casefold() == "history"  # Excel's own
        ):
            raise bad_request(
                "a worksheet name is 1 to 31 characters, none of [ ] : * ? / \\, neither beginning nor ending "
                "with ' and not History"
            )
        _storable(name, "the worksheet name")
        if name.casefold() in (existing.casefold() for existing in self.book.sheetnames):
            raise WorkbookError(
                409, "conflict", f"the workbook already has a worksheet named {name}", "itemAlreadyExists"
            )
        self.book.create_sheet(name)
        self.model.add_sheet(name)
        return self.worksheet(name)

    # -- ranges ---------------------------------------------------------------------------------

    @on_deep_stack
    def range(self, sheet_key: str, address: str) -> dict:
        sheet = self.worksheet(sheet_key)
        return self._read(sheet, self._address(sheet, address))

    @on_deep_stack
    def used_range(self, sheet_key: str, values_only: bool = False) -> dict:
        """The smallest range holding every cell with a value (and, unless `values_only`, any formatting);
        A1 for an empty sheet."""
        sheet = self.worksheet(sheet_key)
        cells = [
            (row, column)
            for (row, column), cell in self.book[sheet.name]._cells.items()
            if cell.value is not None or (not values_only and cell.has_style)
        ]
        if not cells:
            return self._read(sheet, Address(sheet.name, 1, 1, 1, 1))
        rows, columns = [row for row, _ in cells], [column for _, column in cells]
        return self._read(sheet, _limited(Address(sheet.name, min(rows), min(columns), max(rows), max(columns))))

    @on_deep_stack
    def patch(
        self, sheet_key: str, address: str, values: Any = None, formulas: Any = None, number_format: Any = None
    ) -> dict:
        """Graph's range PATCH: each of `values`, `formulas`, `numberFormat` a 2-D array of the range's shape,
        where null leaves a cell as it is and "" empties it; a value that starts with "=" is a formula."""
        sheet = self.worksheet(sheet_key)
        where = self._address(sheet, address)
        grids = [
            (name, grid)
            for name, grid in (("values", values), ("formulas", formulas), ("numberFormat", number_format))
            if grid is not None
        ]
        if not grids:
            raise bad_request("give values, formulas or numberFormat")
        for name, grid in grids:
            _check_shape(name, grid, where)
        target, index = self.book[sheet.name], sheet.position
        _check_arrays(
            target.title, self._arrays.get(target.title, {}), where, [g for n, g in grids if n != "numberFormat"]
        )
        for name, grid in grids:
            for r, row in enumerate(grid):
                for c, value in enumerate(row):
                    if value is None:
                        continue
                    cell = target.cell(where.first_row + r, where.first_column + c)
                    if name == "numberFormat":
                        if not isinstance(value, str):
                            raise bad_request("numberFormat holds strings")
                        if len(value) > MAX_NUMBER_FORMAT:
                            raise bad_request(f"a numberFormat is longer than Excel's {MAX_NUMBER_FORMAT} characters")
                        cell.number_format = _storable(value, "numberFormat")
                        self._format(index, cell)
                        continue
                    cell.value = _stored(_input(value, name, self._names))
                    self._mirror(index, cell)
        self.model.evaluate()
        for name, grid in grids:  # IronCalc takes any text as a formula and calculates #ERROR! for nonsense
            for r, row in enumerate(grid):
                for c, value in enumerate(row):
                    at = (where.first_row + r, where.first_column + c)
                    if (
                        isinstance(value, str)
                        and value.startswith("=")
                        and _parse_error(self.model, index, *at)
                        and not self._parses(value, index, *at)
                    ):
                        raise bad_request(f"the formula {value[:60]!r} cannot be parsed")
        return self._read(sheet, where)

    def to_bytes(self, whole: bool = True) -> bytes:
        """The workbook as .xlsx. Formulas are kept and marked for recalculation when the file is opened
        (openpyxl writes no calculated values); this host reads them calculated anyway. `whole`: refused if
        the file would lose a part, or an object of its drawings (openpyxl keeps no macros, pictures, shapes,
        form controls, custom XML, ...); a copy only the session calculates with need not be whole."""
        from openpyxl.workbook.properties import CalcProperties

        self.book.calculation = self.book.calculation or CalcProperties()
        self.book.calculation.fullCalcOnLoad = True
        out = io.BytesIO()
        self.book.save(out)
        if whole:
            saved = _parts(out.getvalue())
            lost = sorted(name for kind, names in self._kept.kinds.items() if kind not in saved.kinds for name in names)
            if saved.drawn < self._kept.drawn:  # a drawing kept for its charts, without the shapes beside them
                lost.append(f"{self._kept.drawn - saved.drawn} of the objects of its drawings")
            if lost:
                raise unsupported(
                    f"this workbook holds what this host cannot keep when it saves a change ({', '.join(lost[:5])}"
                    + (", ..." if len(lost) > 5 else "")
                    + "): it can be read, and changed in a session that does not persist, not changed itself"
                )
        return out.getvalue()

    # -- helpers ----------------------------------------------------------------------------------

    def _sheet(self, index: int, sheet) -> Sheet:
        return Sheet(
            "{" + str(uuid.uuid5(_SHEET_IDS, sheet.title)).upper() + "}",
            sheet.title,
            index,
            {"visible": "Visible", "hidden": "Hidden", "veryHidden": "VeryHidden"}[sheet.sheet_state],
        )

    @staticmethod
    def _address(sheet: Sheet, text: str) -> Address:
        try:
            address = parse_address(text)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        if address.sheet is not None and sheet.name.casefold() not in (name.casefold() for name in address.sheet_names):
            raise bad_request(f"the address names sheet {address.sheet[:40]!r}, not {sheet.name!r}")
        return _limited(address)

    def _read(self, sheet: Sheet, where: Address) -> dict:
        """Graph's workbookRange of `where`: calculated values, formulas, text, value types, formats."""
        model, index, cells = self.model, sheet.position, self.book[sheet.name]._cells
        values: list[list] = []
        formulas: list[list] = []
        texts: list[list] = []
        types: list[list] = []
        formats: list[list] = []
        for row in range(where.first_row, where.last_row + 1):
            value_row, formula_row, text_row, type_row, format_row = [], [], [], [], []
            for column in range(where.first_column, where.last_column + 1):
                value: Any  # a str, float or bool, as the cell's type says
                if model.is_empty_cell(index, row, column):  # its CellType would say Number
                    value, kind, text = "", "Empty", ""
                else:
                    value = model.get_cell_value(index, row, column)
                    # a native enum that int() takes, though its stub declares a plain Enum
                    kind = _TYPES.get(int(model.get_cell_type(index, row, column)), "String")  # type: ignore[call-overload]
                    if kind == "Double" and float(value).is_integer() and abs(value) < 2**53:
                        value = int(value)
                    text = model.get_formatted_cell_value(index, row, column)
                formula = model.get_cell_formula(index, row, column)
                cell = cells.get((row, column))
                value_row.append(value)
                formula_row.append(formula if formula is not None else value)
                text_row.append(text)
                type_row.append(kind)
                format_row.append(cell.number_format if cell is not None else "General")
            for grid, line in (
                (values, value_row),
                (formulas, formula_row),
                (texts, text_row),
                (types, type_row),
                (formats, format_row),
            ):
                grid.append(line)
        return {
            "address": where.text(sheet.name),
            "addressLocal": where.text(sheet.name),
            "rowIndex": where.first_row - 1,
            "columnIndex": where.first_column - 1,
            "rowCount": where.rows,
            "columnCount": where.columns,
            "cellCount": where.rows * where.columns,
            "values": values,
            "formulas": formulas,
            "text": texts,
            "valueTypes": types,
            "numberFormat": formats,
        }

    def _parses(self, formula: str, index: int, row: int, column: int) -> bool:
        """Whether IronCalc can parse `formula` in that cell, which calculated its parse error: so does a formula
        that reads a cell of the file IronCalc cannot parse (a table's `Sales[Amount]`). In a model of the same
        sheets, all empty, only the formula's own parse error is left to calculate it."""
        alone = ironcalc.create("parse", "en", "UTC")
        for position, sheet in enumerate(self.book.worksheets):
            if position:
                alone.add_sheet(sheet.title)
            else:
                alone.rename_sheet(0, sheet.title)
        alone.update_cell_with_formula(index, row, column, formula)
        alone.evaluate()
        return not _parse_error(alone, index, row, column)

    def _define(self, name: str, scope: int | None, formula: str | None) -> None:
        """A defined name, in the model too if IronCalc takes it. It takes references and LAMBDAs only, not a
        constant, a named formula, several areas or #REF!: those, and LAMBDAs (a cell could call one without
        end), stay in the file as they were, and what uses them calculates #NAME? here."""
        if formula and not _formula_problem(formula, self._names):
            with contextlib.suppress(ironcalc.WorkbookError):
                self.model.new_defined_name(name, scope, formula)
                key = name.lower()  # (a sheet's and the book's of one name: the larger counts)
                self._names[key] = max(self._names.get(key, 0), referenced_cells(formula, self._names))

    def _format(self, index: int, cell) -> None:
        """The cell's number format, in the model too: `text` is the value as that format shows it. A format
        longer than Excel's, which only a file can hold, stays in the file: `text` shows the value as General."""
        if len(cell.number_format) > MAX_NUMBER_FORMAT:
            return
        style = self.model.get_cell_style(index, cell.row, cell.column)
        style["num_fmt"] = cell.number_format
        self.model.set_cell_style(index, cell.row, cell.column, style)

    def _mirror(self, index: int, cell) -> None:
        """Put one openpyxl cell into the calculating model."""
        model, row, column, value = self.model, cell.row, cell.column, cell.value
        if cell.number_format != "General":
            self._format(index, cell)
        if value is None:
            model.clear_cell_contents(index, row, column)
        elif isinstance(value, DataTableFormula):  # a what-if table: not calculated here
            model.clear_cell_contents(index, row, column)
        elif isinstance(value, ArrayFormula):
            _loadable(cast(str, value.text), cell, self._names)
            ref = _array_area(value.ref, cell)
            self._arrays.setdefault(cell.parent.title, {})[cell.coordinate] = ref
            model.set_user_array_formula(
                index, ref.first_row, ref.first_column, ref.columns, ref.rows, cast(str, value.text)
            )  # a loaded array formula has its text
        elif cell.data_type == "f":
            _loadable(value, cell, self._names)
            model.update_cell_with_formula(index, row, column, value)
        elif isinstance(value, bool):
            model.update_cell_with_bool(index, row, column, value)
        elif isinstance(value, (int, float)):
            if not _double(value):  # a stored 1e400, or 400 digits
                raise unsupported(f"{cell.parent.title}!{cell.coordinate} holds a number Excel cannot store")
            model.update_cell_with_number(index, row, column, float(value))
        elif isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            model.update_cell_with_number(index, row, column, float(to_excel(value)))  # a serial, as Excel
        elif isinstance(value, datetime.timedelta):
            model.update_cell_with_number(index, row, column, value.total_seconds() / 86400)
        elif cell.data_type == "e" and str(value).startswith("#"):  # set_user_input takes "=…" as a formula
            model.set_user_input(index, row, column, str(value))
        else:
            model.update_cell_with_text(index, row, column, str(value))


class _Reader(ExcelReader):
    """openpyxl's reader, but a number formatted as a date stays the number it is. openpyxl makes a datetime of it,
    and saves that back: rounded to the microsecond, Excel's 1900-02-29 (serial 60) a day early, a number past the
    dates it knows #VALUE!, a 1904-based workbook's dates moved by four years; in every cell of the file, at any
    write."""

    def read_worksheets(self) -> None:
        book = cast(Any, self.wb)  # what apply_stylesheet found, which the worksheets' reader converts by
        formats = book._date_formats, book._timedelta_formats
        book._date_formats, book._timedelta_formats = set(), set()
        try:
            super().read_worksheets()
        finally:
            book._date_formats, book._timedelta_formats = formats


# Parts a save may drop: what openpyxl writes otherwise (shared strings: in the cells), what Excel makes again (the
# calculation chain) or can do without (the printer's settings, the thumbnail the file shows in a folder).
_DISPENSABLE = re.compile(
    r"xl/sharedStrings\.xml|xl/calcChain\.xml|xl/printerSettings/.*|docProps/thumbnail\.[^/]*", re.IGNORECASE
)


@dataclass(frozen=True)
class _Parts:
    """What a save must keep of a package: its parts by content type (a part openpyxl renames, comments, keeps
    its type), and how many objects its drawings anchor (openpyxl keeps a drawing's charts, not its shapes)."""

    kinds: Mapping[str, tuple[str, ...]]
    drawn: int


_ANCHOR = re.compile(rb"<(?:\w+:)?(?:twoCellAnchor|oneCellAnchor|absoluteAnchor)\b")


def _parts(data: bytes) -> _Parts:
    """The package's _Parts, but for those a save may drop (_DISPENSABLE)."""
    kinds: dict[str, list[str]] = {}
    drawn = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        root = ElementTree.fromstring(archive.read("[Content_Types].xml"))
        defaults, overrides = {}, {}
        for entry in root:
            if entry.tag.endswith("}Default"):
                defaults[entry.get("Extension", "").lower()] = entry.get("ContentType", "")
            elif entry.tag.endswith("}Override"):
                overrides[entry.get("PartName", "").lstrip("/")] = entry.get("ContentType", "")
        for name in archive.namelist():
            if name.endswith("/") or name == "[Content_Types].xml" or _DISPENSABLE.fullmatch(name):
                continue
            kind = overrides.get(name) or defaults.get(name.rsplit(".", 1)[-1].lower())
            if kind:
                kinds.setdefault(kind, []).append(name)
            if kind == "application/vnd.openxmlformats-officedocument.drawing+xml":
                drawn += len(_ANCHOR.findall(archive.read(name)))
    return _Parts({kind: tuple(names) for kind, names in kinds.items()}, drawn)


def _exact_number(value: Any) -> str:
    """openpyxl's safe_string, which writes a cell's number, but with every digit the number has: it writes 16,
    and a write then changed every number of 17 significant digits in the file (0.30000000000000004 became 0.3)."""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return safe_string(value)


openpyxl.cell._writer.safe_string = _exact_number  # type: ignore[attr-defined]  # (the name both its writers call)


def _parse_error(model: ironcalc.Model, index: int, row: int, column: int) -> bool:
    """Whether the cell calculated IronCalc's #ERROR!, the error of a formula it cannot parse (not the text)."""
    # a native enum that int() takes, though its stub declares a plain Enum
    kind = int(model.get_cell_type(index, row, column))  # type: ignore[call-overload]
    return _TYPES.get(kind) == "Error" and model.get_cell_value(index, row, column) == "#ERROR!"


def _limited(address: Address) -> Address:
    """`address`, if a read or write of it is one this host answers (the answer is JSON of every cell)."""
    if address.rows * address.columns > MAX_RANGE_CELLS:
        raise bad_request(f"a range may have at most {MAX_RANGE_CELLS} cells")
    return address


def _check_shape(name: str, grid: Any, where: Address) -> None:
    if (
        not isinstance(grid, list)
        or len(grid) != where.rows
        or any(not isinstance(row, list) or len(row) != where.columns for row in grid)
    ):
        raise bad_request(f"{name} must be a {where.rows} x {where.columns} array, the shape of the range")


def _check_arrays(title: str, arrays: Mapping[str, Address], where: Address, grids: list[list[list]]) -> None:
    """Refuse to write part of an array formula of the sheet `title` (`arrays`: Workbook._arrays), as Excel does
    ("You can't change part of an array"): the file would keep the array and the new value, the calculating model
    the array, and a read after the write would differ from the same workbook opened again."""
    for anchor, area in arrays.items():
        for r in range(max(area.first_row, where.first_row), min(area.last_row, where.last_row) + 1):
            for c in range(max(area.first_column, where.first_column), min(area.last_column, where.last_column) + 1):
                if any(grid[r - where.first_row][c - where.first_column] is not None for grid in grids):
                    raise bad_request(
                        f"{area.text(title)} is an array formula (at {anchor}); a part of it cannot be changed"
                    )


def _input(value: Any, name: str, names: Mapping[str, int]) -> Any:
    """A cell's new content from a PATCH: "" empties it, a string starting with "=" is a formula (`names` as
    _formula_problem takes them)."""
    if isinstance(value, bool) or isinstance(value, (int, float)) and not isinstance(value, bool):
        if not _double(value):
            raise bad_request(f"{name} holds a number Excel cannot store")
        return value
    if isinstance(value, str):
        if len(value) > 32767:
            raise bad_request(f"{name} holds text Excel cannot store (more than 32767 characters)")
        if value.startswith("=") and (problem := _formula_problem(value, names)):
            raise bad_request(f"{name} holds a formula that {problem}")
        return None if value == "" else _storable(value, name)
    raise bad_request(f"{name} holds strings, numbers, booleans or null")


def _stored(value: Any) -> Any:
    """A cell's new content as the file stores it: a formula with the prefix of each future function it calls
    (_FUTURE). Only functions IronCalc knows are prefixed: another name may be an add-in's, which Excel calls
    by its bare name. (LET's parameters would need theirs too, `_xlpm.`: not written.)"""
    if not isinstance(value, str) or not value.startswith("="):
        return value
    try:
        tokens = Tokenizer(value).items
    except TokenizerError:  # IronCalc refuses it too, before anything is stored
        return value
    out = []
    for token in tokens:
        text = token.value
        if token.type == Token.FUNC and token.subtype == Token.OPEN:
            name = text[:-1].upper()
            if not name.startswith("_XL") and name not in FORMULAE and _calculated(name):
                text = (_WORKSHEET_FUTURE if name in _WORKSHEET_FUTURES else _FUTURE) + name + "("
        out.append(text)
    return "=" + "".join(out)


def _calculated(name: str) -> bool:
    """Whether IronCalc knows the function `name`: it writes back a name it does not know in lower case."""
    known = _KNOWN.get(name)
    if known is None:
        probe = ironcalc.create("probe", "en", "UTC")
        probe.update_cell_with_formula(0, 1, 1, f"={name}()")
        known = (probe.get_cell_formula(0, 1, 1) or "").startswith(f"={name}(")
        if len(_KNOWN) < 4096:  # (names a client made up are not remembered past that)
            _KNOWN[name] = known
    return known


def _formula_problem(formula: str, names: Mapping[str, int]) -> str | None:
    """Why IronCalc must not be given `formula`, if it must not; `names` are the workbook's defined names in the
    model, with the cells each spans. Parentheses and braces in "text" or in a 'sheet name' do not nest."""
    if len(formula) > MAX_FORMULA:
        return f"is longer than Excel's {MAX_FORMULA} characters"
    if _LAMBDA.search(formula):
        return "uses LAMBDA, which this host does not calculate"
    if _UNBOUNDED.search(formula):
        return "uses INDIRECT or OFFSET, whose ranges this host cannot bound before calculating"
    if referenced_cells(formula, names) > MAX_FORMULA_CELLS:
        return f"names ranges of more than {MAX_FORMULA_CELLS} cells together (four whole columns)"
    if formula.count("(") + formula.count("{") > MAX_NESTING:  # otherwise it cannot nest deeper
        depth, quote = 0, ""
        for ch in formula:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch in "({":
                depth += 1
                if depth > MAX_NESTING:
                    return f"nests deeper than Excel's {MAX_NESTING} levels"
            elif ch in ")}":
                depth = max(depth - 1, 0)
    return None


def _loadable(formula: str, cell, names: Mapping[str, int]) -> None:
    """A stored formula IronCalc must not be given makes the workbook one this host cannot open."""
    if problem := _formula_problem(formula, names):
        raise unsupported(f"the formula in {cell.parent.title}!{cell.coordinate} {problem}")


def _array_area(ref: Any, cell) -> Address:
    """The cells a stored array formula fills, which IronCalc holds every one of: a damaged file's ref, or one past
    MAX_FORMULA_CELLS (A1:XFD1048576 ran the worker out of memory), makes the workbook one this host cannot open."""
    try:
        area = parse_address(str(ref))
    except ValueError as exc:
        raise unsupported(f"the array formula in {cell.parent.title}!{cell.coordinate} fills no range: {exc}") from None
    if area.rows * area.columns > MAX_FORMULA_CELLS:
        raise unsupported(
            f"the array formula in {cell.parent.title}!{cell.coordinate} fills more than {MAX_FORMULA_CELLS} cells"
        )
    return area


def _double(number: float) -> bool:
    """Whether Excel can store `number`, a double: not NaN, infinite, or an integer too large for one (JSON's
    and an .xlsx's integers have any number of digits, and float() of those raises)."""
    return abs(number) <= sys.float_info.max


def _storable(text: str, what: str) -> str:
    """`text` if an .xlsx can hold it. openpyxl refuses what XML cannot hold in a cell's value only (an exception,
    a 500) and writes it elsewhere where it makes the file unreadable (a worksheet's name, a number format)."""
    if match := NOT_XML.search(text):
        raise bad_request(f"{what} holds U+{ord(match[0]):04X}, which an .xlsx cannot store")
    return text
