"""Workbooks for Graph's workbook API: an .xlsx file read and written with openpyxl, its formulas calculated
by IronCalc. Pure: bytes in, bytes out, no HTTP and no database (the Graph face and the workbook sessions
build on it).

IronCalc, not `formulas` or `pycel`: it calculated every case we tried (SUM, products, cross-sheet
references, errors, IFERROR, INDIRECT, XLOOKUP ...) where the others missed some, it is 100x faster and
lighter (a 10 MiB workbook recalculates in 0.1 s in 25 MiB of its own), it is MIT/Apache licensed and
maintained, and its wheel has no dependencies. openpyxl stays the file's reader and writer, so what IronCalc
does not model (styles, validation, comments) is kept as it was.
"""

from .address import Address, parse_address
from .calculator import Call
from .errors import WorkbookError

__all__ = ["Address", "Call", "Workbook", "WorkbookError", "open_workbook", "parse_address"]


def __getattr__(name: str):
    """Workbook and open_workbook are loaded on first use: openpyxl and IronCalc cost a worker about 16 MiB,
    which a host that never serves a workbook need not pay."""
    if name in ("Workbook", "open_workbook"):
        from . import workbook

        return getattr(workbook, name)
    raise AttributeError(name)
