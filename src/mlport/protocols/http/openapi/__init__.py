"""OpenAPI 3.1 description of every HTTP endpoint of the runtime.

The document is built on each request, so it names the models served right now: an enum of
their names and, per model, example bodies made from its signature.  Any route of the app that
is not described here still appears, marked ``x-mlport-undocumented``, so the list of paths
never hides an endpoint.

Modules, by job: :mod:`.parts` (references, operations, error answers), :mod:`.schemas` (request
and response bodies), :mod:`.examples` (what is served now), :mod:`.paths` (one function per API),
:mod:`.routetable` (the app's routes matched against paths) and :mod:`.document` (the whole).
"""

from mlport.protocols.http.openapi.document import OPENAPI_VERSION, UNDOCUMENTED, build_openapi
from mlport.protocols.http.openapi.routetable import route_table, sample_path, serves, undocumented

__all__ = ["OPENAPI_VERSION", "UNDOCUMENTED", "build_openapi", "route_table", "sample_path", "serves", "undocumented"]
