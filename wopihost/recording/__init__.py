"""`wopihost serve --record DIR`: every WOPI and Graph exchange of the server, as HTTP Archive files, one per
client session, with every secret replaced by a placeholder (docs/testing.md; wopihost/har.py names them).

recorder.py is the WSGI layer that writes each exchange, redacted (redaction.py), to its worker's spool
(spool.py); assembly.py turns the spool into .har files when the server stops (wopihost/server.py's hooks).
"""

from .assembly import assemble
from .recorder import Recorder

__all__ = ["Recorder", "assemble"]
