"""A1-style range addresses as Graph's workbook API takes them: `A1`, `B2:C5`, `$A$1`, with an optional
sheet (`Sheet1!A1:B2`, `'My sheet'!A1`, `'Bob''s data'!A1`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_ROW, MAX_COLUMN = 1_048_576, 16_384  # Excel's grid
_CELL = r"\$?([A-Za-z]{1,3})\$?([0-9]{1,7})"
_RANGE = re.compile(rf"^{_CELL}(?::{_CELL})?$")


@dataclass(frozen=True)
class Address:
    sheet: str | None
    first_row: int  # 1-based, inclusive
    first_column: int
    last_row: int
    last_column: int
    # A quoted sheet name as it came, where Excel's reading of it (`sheet`) differs: msgraph-sdk puts what it is
    # given in the URL as it is, and a caller may write 'Bob's data'!A1, or 'Bob''s data'!A1 for a sheet named
    # Bob''s data; which one is meant, only the workbook can tell.
    sheet_as_sent: str | None = None

    @property
    def sheet_names(self) -> tuple[str, ...]:
        """The sheet the address may name: Excel's reading of it, and the name as it came."""
        return tuple(name for name in (self.sheet, self.sheet_as_sent) if name is not None)

    @property
    def rows(self) -> int:
        return self.last_row - self.first_row + 1

    @property
    def columns(self) -> int:
        return self.last_column - self.first_column + 1

    def text(self, sheet: str) -> str:
        """`Sheet1!A1:B2` (quoted where the name needs it), as Graph's `address` says it."""
        from openpyxl.utils.cell import get_column_letter  # openpyxl is loaded when a workbook is first used

        start = f"{get_column_letter(self.first_column)}{self.first_row}"
        end = f"{get_column_letter(self.last_column)}{self.last_row}"
        name = sheet if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet) else "'" + sheet.replace("'", "''") + "'"
        return f"{name}!{start}" + (f":{end}" if end != start else "")


def parse_address(text: str) -> Address:
    """The address, or ValueError saying what is wrong with it. A quoted sheet name is read as Excel writes it,
    each ' in it doubled; one left single (as msgraph-sdk passes 'Bob's data'!A1 on) is taken as it is."""
    sheet = as_sent = None
    if "!" in text:  # the last: a sheet's name may hold "!", a cell's address cannot
        sheet, _, text = text.rpartition("!")
        if sheet.startswith("'") or sheet.endswith("'"):
            if len(sheet) < 2 or not (sheet.startswith("'") and sheet.endswith("'")):
                raise ValueError(
                    f"the sheet name {sheet[:40]!r} before ! opens a quote it does not close, or the reverse"
                )
            as_sent = sheet[1:-1]
            sheet = as_sent.replace("''", "'")
        if not sheet:
            raise ValueError("the sheet name before ! is empty")
    match = _RANGE.match(text.strip())
    if match is None:
        raise ValueError(f"{text[:40]!r} is not a cell or range address such as A1 or B2:C5")
    first_column, first_row = _cell(match.group(1), match.group(2))
    last_column, last_row = _cell(match.group(3), match.group(4)) if match.group(3) else (first_column, first_row)
    return Address(
        sheet,
        min(first_row, last_row),
        min(first_column, last_column),
        max(first_row, last_row),
        max(first_column, last_column),
        as_sent if as_sent != sheet else None,
    )


def _cell(column: str, row: str) -> tuple[int, int]:
    from openpyxl.utils.cell import column_index_from_string

    number = column_index_from_string(column.upper())
    if not 1 <= int(row) <= MAX_ROW or number > MAX_COLUMN:
        raise ValueError(f"{column}{row} is outside the sheet (XFD1048576 is the last cell)")
    return number, int(row)


# A reference in a formula: cells, whole columns (D:G) or whole rows (1:4), joined by ":" (D1:D2:G9 is the box
# around them all), outside "text" and 'sheet names', not inside a longer name (Sheet1, LOG10, TAX2020_total).
_PART = r"\$?[A-Za-z]{1,3}\$?[0-9]{1,7}|\$?[A-Za-z]{1,3}|\$?[0-9]{1,7}"
_AREA = re.compile(rf"(?<![A-Za-z0-9_.$\\])(?:{_PART})(?:\s*:\s*(?:{_PART}))+(?![A-Za-z0-9_.(!$])")
_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"?|'(?:[^']|'')*'?")
# A word that may be a defined name: not a function (followed by "("), a sheet (by "!"), or inside a longer word
_WORD = re.compile(r"(?<![A-Za-z0-9_.$\\])[A-Za-z_\\][A-Za-z0-9_.\\]*(?![A-Za-z0-9_.(!$])")


def referenced_cells(formula: str, names: Mapping[str, int] | None = None) -> int:
    """How many cells the ranges a formula names span together (a cell alone counts as none): what a calculation
    may have to hold at once, since IronCalc takes a range cell by cell (COUNT(D:D) builds a million). `names`
    (a defined name in lower case: the cells it spans) counts each use of one too: COUNT(N,N,N) holds N thrice."""
    from openpyxl.utils.cell import column_index_from_string

    text = _QUOTED.sub('""', formula)
    total = sum(names.get(word.lower(), 0) for word in _WORD.findall(text)) if names else 0
    for area in _AREA.finditer(text):
        rows, columns = [], []
        for part in area[0].split(":"):
            part = part.strip().replace("$", "")
            letters = part.rstrip("0123456789")
            digits = part[len(letters) :]
            if letters:
                columns.append(column_index_from_string(letters.upper()))
            else:
                columns += [1, MAX_COLUMN]
            if digits:
                rows.append(int(digits))
            else:
                rows += [1, MAX_ROW]
        total += (max(rows) - min(rows) + 1) * (max(columns) - min(columns) + 1)
    return total
