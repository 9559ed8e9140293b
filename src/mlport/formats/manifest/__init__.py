"""Manifests: flows, ensembles, routers, cascades and transformers of other models, served as one model.

- :mod:`.schema`: the file's node tree as typed models, and the errors that name the step;
- :mod:`.policies`: the routers' pure routing policies (weighted, sticky, epsilon-greedy, Thompson);
- :mod:`.nodes`: the nodes that run a request;
- :mod:`.loader`: from a file to a tree of nodes;
- :mod:`.format`: the format plugin and the evaluator it loads.
"""

from mlport.formats.manifest.format import ManifestEvaluator, ManifestFormat
from mlport.formats.manifest.schema import ManifestError

__all__ = ["ManifestError", "ManifestEvaluator", "ManifestFormat"]
