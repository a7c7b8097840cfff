"""CSPP Plus incremental file transfer: the pure building blocks.

``frames`` (the binary frame codec), ``chunkid`` (SpookyHash ChunkIds), ``chunking`` (Zip and FullFile
chunking of a stream) and ``signatures`` (signatures, deltas and reassembly). None of them does I/O of its
own beyond reading or writing file objects that the caller opened, and none knows about HTTP.
"""
