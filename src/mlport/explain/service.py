"""Explanations of single predictions, for every format, on their own small thread pool.

:meth:`ExplainService.explain` holds a loaded version (as a prediction does), decodes the request with the
caller's codec, checks its rows and parameters, then runs the explanation on the explanation threads (never the
prediction threads, so a long explanation never holds up predictions). The model itself runs through its own
evaluator with inputs checked as a prediction's are (:class:`~mlport.explain.result.ModelFunction`).

Which method: image inputs (rank 3 or more) get occlusion maps; numeric tabular inputs of a tree ensemble get exact
tree SHAP values; other tabular models get Kernel SHAP over background rows (the version's reference profile, or
the request's ``background``). Bounds: see :mod:`mlport.explain.params`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlport.core.inference import InferenceRequest
from mlport.core.validate import check_inputs
from mlport.errors import ErrorCode, MlportError, PayloadTooLarge, RetryLater, Unprocessable
from mlport.explain.agnostic import NO_BACKGROUND, explain_kernel, profile_background, request_background
from mlport.explain.heatmap import heatmap_png
from mlport.explain.layout import TabularLayout, scores, tabular_layout, targets_of
from mlport.explain.occlusion import explain_occlusion, image_input
from mlport.explain.params import ExplainLimits, ExplainParams, parse_params
from mlport.explain.result import Budget, Explanation, ModelFunction, batch_rows
from mlport.explain.shapload import import_shap
from mlport.explain.tree import explain_trees
from mlport.formats.base import Arrays, Evaluator
from mlport.observability.drift.profile import Profile, find_profile, read_profile
from mlport.runtime.manager import ColdModel, LoadedVersion, ModelManager

__all__ = ["Answer", "ExplainService"]

log = logging.getLogger(__name__)

#: Seconds an explanation may overrun its bound before the caller stops waiting (one model call, one tree pass).
GRACE_S = 30.0


@dataclass(slots=True)
class Answer:
    model: str
    version: str
    explanation: Explanation
    #: The heat map over the first image, when asked for.
    png: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return self.explanation.to_json(self.model, self.version)


class ExplainService:
    def __init__(self, manager: ModelManager, limits: ExplainLimits | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.manager = manager
        self.limits = limits or ExplainLimits()
        r = registry or CollectorRegistry()
        self._count = Counter("mlport_explanations", "Explanations by model, method and outcome (ok, or the error "
                              "code)", ["model", "method", "status"], registry=r)
        self._seconds = Histogram("mlport_explanation_seconds", "Time explanations took to run, seconds",
                                  ["model", "method"], registry=r,
                                  buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
        self._executor = ThreadPoolExecutor(max_workers=max(1, self.limits.threads),
                                            thread_name_prefix="mlport-explain")
        #: Explanations running or waiting for a thread.
        self.pending = 0
        self._profiles: weakref.WeakKeyDictionary[LoadedVersion, Profile | None] = weakref.WeakKeyDictionary()

    async def explain(self, name: str, version: str | int | None,
                      decode: Callable[[LoadedVersion], InferenceRequest], png: bool = False) -> Answer:
        """Explain the rows of the request ``decode`` makes of the body (given the version that serves it)."""
        try:
            lv = self.manager.acquire(name, version)
        except ColdModel:
            lv = await self.manager.acquire_cold(name, version)
        handed = False
        method = ""
        try:
            request = decode(lv)
            params = parse_params(request.parameters, self.limits)
            evaluator = lv.evaluator.for_signature(str(request.parameters.get("signature_name") or ""))
            inputs = check_inputs(evaluator.signature, request.inputs)
            rows = batch_rows(inputs)
            if rows > params.max_rows:
                raise PayloadTooLarge(f"the request has {rows} rows; an explanation takes at most {params.max_rows}")
            if self.pending >= self.limits.threads + self.limits.max_queue:
                raise RetryLater(f"{self.pending} explanations are running or waiting; try again shortly", 2.0)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, self._run, lv, evaluator, inputs, request, params, png)
            handed = True
            self.pending += 1
            future.add_done_callback(lambda _f: self._done(lv))
            try:
                explanation = await asyncio.wait_for(asyncio.shield(future), params.timeout_s + GRACE_S)
            except TimeoutError:
                raise MlportError(f"the explanation ran past its time bound of {params.timeout_s:g} s",
                                  ErrorCode.DEADLINE_EXCEEDED) from None
            method = explanation.method
            self._seconds.labels(lv.model, method).observe(explanation.seconds)
            self._count.labels(lv.model, method, "ok").inc()
            return Answer(lv.model, str(lv.version), explanation, explanation.png)
        except MlportError as exc:
            self._count.labels(lv.model, method, exc.code.value).inc()
            raise
        finally:
            if not handed:
                self.manager.release(lv)

    def _done(self, lv: LoadedVersion) -> None:
        self.pending -= 1
        self.manager.release(lv)

    def _run(self, lv: LoadedVersion, evaluator: Evaluator, inputs: Arrays, request: InferenceRequest,
             params: ExplainParams, png: bool) -> Explanation:
        """The explanation itself (on an explanation thread)."""
        image = image_input(evaluator.signature.inputs, inputs)
        if params.method == "occlusion" and image is None:
            raise Unprocessable("occlusion explains image inputs (rank 3 or more); this model's inputs are not")
        if png and image is None:
            raise MlportError("a PNG heat map answers explanations of image inputs; ask for application/json",
                              ErrorCode.NOT_ACCEPTABLE)
        if image is None:
            import_shap()  # the first import takes seconds: not counted in the explanation's time
        budget = Budget(params.max_evaluations, params.timeout_s)
        fn = ModelFunction(evaluator, lv.model, budget, self.limits.chunk_rows)
        outputs = fn(inputs)
        wanted = request.outputs
        labels = lv.config.labels
        if image is not None:
            result = explain_occlusion(fn, image, inputs, outputs, wanted, labels, params)
        else:
            result = self._tabular(lv, evaluator, fn, inputs, outputs, params, wanted)
        result.evaluations = budget.used
        result.seconds = budget.seconds
        if png and result.image is not None:
            first = result.outputs[0].map
            assert first is not None
            result.png = heatmap_png(result.image, first[0])
        return result

    def _tabular(self, lv: LoadedVersion, evaluator: Evaluator, fn: ModelFunction, inputs: Arrays, outputs: Arrays,
                 params: ExplainParams, wanted: list[str] | None) -> Explanation:
        layout = tabular_layout(evaluator.signature, inputs, lv.config.fields)
        if layout is None:
            given = ", ".join(f"'{s.name}' {s.datatype.value} {list(s.shape)}" for s in evaluator.signature.inputs)
            raise Unprocessable(f"explanations take numeric inputs of one or k values per row, or images; this model "
                                f"takes {given}")
        if params.method in (None, "tree_shap"):
            tree = evaluator.tree_model()
            if tree is not None:
                return explain_trees(tree, layout, inputs, outputs, targets_of(evaluator.signature, outputs, None,
                                                                               lv.config.labels), fn.budget)
            if params.method == "tree_shap":
                raise Unprocessable(f"model '{lv.model}' is not a tree ensemble mlport explains exactly "
                                    "(XGBoost, LightGBM, scikit-learn trees fed numbers); leave 'method' out")
        targets = targets_of(evaluator.signature, outputs, wanted, lv.config.labels)
        background = self._background(lv, layout, params)
        return explain_kernel(fn, layout, layout.matrix(inputs), scores(outputs, targets), targets, background,
                              params)

    def _background(self, lv: LoadedVersion, layout: TabularLayout, params: ExplainParams) -> np.ndarray[Any, Any]:
        if params.background is not None:
            return request_background(params.background, layout, self.limits.max_background_rows)
        profile = self._profile(lv)
        if profile is None:
            raise Unprocessable(f"model '{lv.model}' version {lv.version} has no background data: {NO_BACKGROUND}")
        return profile_background(profile, layout, params.background_rows)

    def _profile(self, lv: LoadedVersion) -> Profile | None:
        """The version's reference profile, read once per loaded version (``None`` when it has none)."""
        if lv in self._profiles:
            return self._profiles[lv]
        path = find_profile(Path(lv.source.path))
        profile = None
        if path is not None:
            try:
                profile = read_profile(path)
            except MlportError as exc:
                log.warning("model %s version %d: its profile is not used for explanations: %s", lv.model,
                            lv.version, exc)
        self._profiles[lv] = profile
        return profile

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

