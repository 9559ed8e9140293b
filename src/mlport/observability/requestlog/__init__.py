"""Request logging with lineage: which request came in, which model version answered it, with what.

:class:`RequestLog` sits on the one inference path (sampling, a bounded queue, one writer thread per sink);
sinks write rotating JSON Lines or Parquet files to a folder or an object-store prefix, or post CloudEvents
in KServe's logger format; :class:`LogReader` reads the files back.
"""

from mlport.observability.requestlog.reader import LogReader, parse_since
from mlport.observability.requestlog.records import as_arrays, decode_tensor, encode_tensor
from mlport.observability.requestlog.writer import Pending, RequestLog

__all__ = ["LogReader", "Pending", "RequestLog", "as_arrays", "decode_tensor", "encode_tensor", "parse_since"]
