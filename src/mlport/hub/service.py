"""The hub's parts wired together: registry, users and tokens, deployments, controller and gateway."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlport.auth import (
    Action,
    Principal,
    TokenService,
    UserStore,
    authorize,
    bootstrap_admin,
    load_token_config,
)
from mlport.auth.http import bearer_token
from mlport.core.sqlitedb import Database
from mlport.deploy.admission_gate import DeploymentGates
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.controller import Controller
from mlport.deploy.gateway import Gateway
from mlport.deploy.jobs import Job, JobRunner, JobStore
from mlport.deploy.shadow import ShadowRecorder
from mlport.deploy.target import Target
from mlport.errors import Conflict, InvalidInput
from mlport.hub.requestlogs import DeploymentLogs
from mlport.hub.serving import DeploymentServing
from mlport.hub.settings import HubSettings
from mlport.hub.signatures import signature_difference
from mlport.hub.state import DeploymentRecord, DeploymentStore
from mlport.protocols.tls import server_tls
from mlport.registry import ModelRegistry, open_store
from mlport.registry.images import ImageRecords

__all__ = ["Hub"]

log = logging.getLogger("mlport.hub")


class Hub:
    """Everything the hub's HTTP app and CLI act on.  ``start``/``stop`` run the deployment controller."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_path)
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        self.store = open_store(settings.store_url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                                access_key=settings.s3_access_key, secret_key=secret)
        self.registry = ModelRegistry(self.db, self.store, max_upload_bytes=settings.max_upload_bytes)
        self.users = UserStore(self.db)
        self.images = ImageRecords(self.db)
        jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.token_config = load_token_config(settings.data_dir, algorithm=settings.jwt_algorithm, secret=jwt_secret,
                                              private_key=settings.jwt_private_key,
                                              public_key=settings.jwt_public_key, ttl_s=settings.token_ttl_s)
        self.tokens = TokenService(self.token_config, revoked=self.users.is_revoked)
        self.deployments = DeploymentStore(self.db)
        self.shadow = ShadowRecorder(self.db)
        self.cache_dir = settings.data_dir / "cache"
        # with TLS on, the replicas serve HTTPS with the hub's certificate, which the hub trusts as it is
        tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        self.request_logs = DeploymentLogs(self.db, settings.data_dir / "requestlog")
        self.serving = DeploymentServing(self.db, settings.gateway_timeout_s)
        #: the gateway's queues of deployments with admission limits, whose depth the autoscaler counts as load
        self.admission = DeploymentGates(max_wait_s=settings.gateway_timeout_s)
        self.controller = Controller(state=self.deployments, fetch=self._fetch, run_dir=settings.data_dir / "run",
                                     interval_s=settings.controller_interval_s, tls=tls,
                                     replica_args=self._replica_args, queued=self.admission.waiting,
                                     forget=self.admission.forget)
        self.gateway = Gateway(controller=self.controller, state=self.deployments, shadow=self.shadow,
                               max_body_bytes=settings.max_body_bytes, timeout_s=settings.gateway_timeout_s,
                               shadow_max_pending=settings.shadow_max_pending,
                               shadow_max_cpu=settings.shadow_max_cpu or None,
                               verify=tls.replica_verify() if tls is not None else True, admission=self.admission)
        self.jobs = JobRunner(JobStore(self.db), settings.data_dir / "jobs", max_running=settings.max_jobs,
                              finishers={"image-build": self._record_image})
        self.started_at = time.time()

    # -- life --------------------------------------------------------------------------------------------
    def bootstrap(self) -> tuple[bool, str | None]:
        """Create the first admin when there is none: ``(created, generated password to print once)``."""
        given = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        before = self.users.count_admins()
        generated = bootstrap_admin(self.users, password=given)
        return self.users.count_admins() > before, generated

    async def start(self) -> None:
        await self.controller.start()
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.gateway.aclose()
        await self.controller.stop()
        self.db.close()

    def _record_image(self, job: Job, result: dict[str, Any]) -> None:
        """An image-build job pushed its image: record its reference and digest on the model version."""
        if result.get("digest"):
            self.images.record(job.spec["model"], int(job.spec["version"]), str(job.spec["tag"]),
                               str(result["digest"]), by=job.created_by)

    def _replica_args(self, name: str) -> list[str]:
        return self.request_logs.replica_args(name) + self.serving.replica_args(name)

    def _fetch(self, model: str, version: int) -> Path:
        return self.registry.fetch(model, version, self.cache_dir)

    # -- auth --------------------------------------------------------------------------------------------
    def principal(self, headers: Any) -> Principal:
        """The verified caller; a token of an account deleted or disabled since it was issued is refused."""
        principal = self.tokens.verify(bearer_token(headers))
        self.users.check_active(principal.subject)
        return principal

    def require(self, headers: Any, action: Action, deployment: str | None = None) -> Principal:
        principal = self.principal(headers)
        authorize(principal, action, deployment)
        return principal

    # -- models --------------------------------------------------------------------------------------------
    def delete_model(self, name: str) -> None:
        """Delete a model with its versions; refused (409) while a deployment serves it."""
        users = self.deployments.using_model(name)
        if users:
            raise Conflict(f"model {name!r} is deployed by {', '.join(users)}: delete those deployments first")
        self.registry.delete_model(name, in_use=lambda m: bool(self.deployments.using_model(m)))
        self.images.forget_model(name)

    # -- deployments ---------------------------------------------------------------------------------------
    def deploy(self, name: str, model: str, version: int | None, policy: ScalePolicy, *, by: str,
               trusted: bool) -> DeploymentRecord:
        """Create deployment ``name`` serving ``model`` (its latest version when ``version`` is None),
        or move an existing one to that version."""
        info = self.registry.get_model(model)
        if version is None:
            if info.latest_version is None:
                raise InvalidInput(f"model {model!r} has no versions yet")
            version = info.latest_version
        self.registry.get_version(model, version)
        existing = self.deployments.find(name)
        if existing is None:
            return self.deployments.create(name, Target(model=model, primary=version), policy, by=by, trusted=trusted)
        if existing.model != model:
            raise Conflict(f"deployment {name!r} serves model {existing.model!r}, not {model!r}")
        return self.deployments.change(name, by=by, action=f"deploy v{version}",
                                       target=Target(model=model, primary=version))

    def experiment(self, name: str, strategy: str, version: int, percent: float, sticky_header: str | None, *,
                   by: str, force: bool = False) -> DeploymentRecord:
        """Start a canary, A/B or shadow of ``version`` beside the primary; refused (409) when the two versions'
        signatures differ, unless ``force``."""
        record = self.deployments.get(name)
        candidate = self.registry.get_version(record.model, version)
        primary = self.registry.get_version(record.model, record.target.primary)
        difference = signature_difference(primary.signature, candidate.signature)
        if difference and not force:
            raise Conflict(f"{record.model} v{version} does not take the same requests as v{primary.version}: "
                           f"{difference}; requests routed to it would fail (force to start the {strategy} anyway)")
        target = Target(model=record.model, primary=record.target.primary, strategy=strategy, candidate=version,
                        percent=percent, sticky_header=sticky_header)
        if strategy == "shadow":
            self.shadow.reset(name)
        return self.deployments.change(name, by=by, action=f"{strategy} v{version}", target=target)

    def promote(self, name: str, *, by: str) -> DeploymentRecord:
        record = self.deployments.get(name)
        if record.target.candidate is None:
            raise InvalidInput(f"deployment {name!r} has no candidate version to promote")
        target = Target(model=record.model, primary=record.target.candidate)
        return self.deployments.change(name, by=by, action=f"promote v{target.primary}", target=target)

    def rollback(self, name: str, *, by: str) -> DeploymentRecord:
        target = self.deployments.rollback_target(name)
        return self.deployments.change(name, by=by, action=f"rollback to v{target.primary}", target=target)

    def status(self, record: DeploymentRecord) -> dict[str, Any]:
        out = record.to_json()
        out["serving"] = self.serving.get(record.name).to_json()
        out["replicas"] = self.controller.status(record.name)
        return out
