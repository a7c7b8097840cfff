"""wopihost: a WOPI host server with CSPP Plus incremental file transfer."""

__version__ = "0.1.0"
