"""Python clients of an mlport server (or any Open Inference Protocol v2 server), numpy in and out.

- :class:`HttpClient` / :class:`AsyncHttpClient`: OIP v2 REST (JSON or the binary tensor extension),
  the model repository extension, and mlport's describe/eval API (JSON and images);
- :class:`GrpcClient` / :class:`AsyncGrpcClient`: ``inference.GRPCInferenceService``.

Every failed call raises :class:`ClientError`, which carries the status and the server's message::

    from mlport.client import HttpClient

    with HttpClient("http://127.0.0.1:8080") as client:
        out = client.infer("iris", {"input": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)})
"""

from mlport.client._errors import ClientError
from mlport.client._grpc import AsyncGrpcClient, GrpcClient
from mlport.client._http import AsyncHttpClient, HttpClient

__all__ = ["AsyncGrpcClient", "AsyncHttpClient", "ClientError", "GrpcClient", "HttpClient"]
