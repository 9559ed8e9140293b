"""Explanations of single predictions: SHAP values of tabular models (exact for tree ensembles, Kernel SHAP over
background data for the rest) and occlusion maps of image models, on their own thread pool (see :mod:`.service`)."""

from mlport.explain.params import ExplainLimits
from mlport.explain.service import Answer, ExplainService

__all__ = ["Answer", "ExplainLimits", "ExplainService"]
