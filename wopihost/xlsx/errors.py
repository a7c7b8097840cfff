"""What the workbook layer refuses with; apart from workbook.py so that it can be caught without loading
openpyxl."""

from __future__ import annotations


class WorkbookError(Exception):
    """Why a workbook or a request on it cannot be served: an HTTP status, Graph's code and inner code."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None):
        super().__init__(message)
        self.status, self.code, self.inner = status, code, inner


class CalculationFailed(WorkbookError):
    """IronCalc panicked (a fault of its own that this workbook or formula meets): refused as a workbook this host
    cannot calculate, and the model, maybe half changed, is not kept."""

    def __init__(self, message: str):
        super().__init__(400, "invalidRequest", message, "unsupportedWorkbook")


def unsupported(message: str, status: int = 400) -> WorkbookError:
    return WorkbookError(status, "invalidRequest", message, "unsupportedWorkbook")


def bad_request(message: str) -> WorkbookError:
    return WorkbookError(400, "invalidRequest", message)


def too_large(size: int, limit: int, being: str = "is") -> WorkbookError:
    return WorkbookError(
        413,
        "requestSizeExceeded",
        f"the workbook {being} {size} bytes; workbooks of up to {limit} bytes can be opened (WOPIHOST_MAX_WORKBOOK_SIZE)",
    )
