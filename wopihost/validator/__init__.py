"""A Python rerun of Microsoft's WOPI validator (github.com/microsoft/wopi-validator-core).

It reads the validator's own test definitions (TestCases.xml, its JSON schemas and resources) from a
checkout given at run time, and runs them against any WOPI host with the validator's semantics:
prerequisites that skip a group, state passed from response to request, the same checks and messages,
cleanup requests, categories, delay groups, and the CSPP Plus frame and chunk checks. Unlike Microsoft's
command line tool it signs every request with proof keys, as Office does, so it can run against a host that
requires them. `python -m wopihost.validator --help` for the command line; `Runner` for use from Python.
"""

try:
    from .definitions import DefinitionError, load
    from .requests import Target
    from .resources import Layout, ResourceError, Resources, Schemas
    from .runner import ERROR, FAIL, PASS, SKIP, Runner, TestResult
    from .signing import ProofSigner
except ModuleNotFoundError as missing:
    if missing.name not in ("requests", "jsonschema"):
        raise
    # installed without the extra: one line for `wopihost validate`, not a traceback
    raise SystemExit(
        f"the WOPI validator needs {missing.name}, which is not installed: pip install 'wopihost[validator]'"
    ) from None

__all__ = [
    "DefinitionError",
    "ERROR",
    "FAIL",
    "Layout",
    "PASS",
    "ProofSigner",
    "ResourceError",
    "Resources",
    "Runner",
    "SKIP",
    "Schemas",
    "Target",
    "TestResult",
    "load",
]
