"""The request bodies of the hub's management API, as typed models.

The handlers in :mod:`mlport.hub.api` parse bodies with these, and :mod:`mlport.hub.openapi` publishes their
JSON schemas: one definition of every field's type and bounds.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

from mlport.auth.passwords import MIN_PASSWORD_CHARS
from mlport.core.bodies import Body
from mlport.deploy.autoscale import PolicyFields

__all__ = ["BODIES", "Experiment", "Login", "NewDeployment", "NewModel", "NewServiceAccount", "NewUser", "Register",
           "Revoke"]

#: Longest lifetime of a service-account token, seconds.
MAX_SERVICE_TTL_S = 365 * 24 * 3600

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


def _comma_list(value: Any) -> Any:
    """A form field ``"a, b"`` as ``["a", "b"]``; anything else unchanged."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


# the pattern is documented here and checked by the handlers (valid_name), whose message says what a name may hold
Name = Annotated[str, StringConstraints(min_length=1, max_length=256),
                 Field(json_schema_extra={"pattern": NAME_PATTERN})]
Text = Annotated[str, StringConstraints(max_length=4096)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Item = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Names = Annotated[list[Item], Field(max_length=100), BeforeValidator(_comma_list)]


class Login(Body):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Password = Field(json_schema_extra={"format": "password"})


class NewUser(Body):
    name: Name
    password: Annotated[str, StringConstraints(min_length=MIN_PASSWORD_CHARS, max_length=1024)] = Field(
        json_schema_extra={"format": "password"})
    roles: Names = Field(default_factory=list)
    deployments: Names | None = Field(None, description="a predictor limited to these deployments")


class NewServiceAccount(Body):
    name: Name
    roles: Names = Field(default_factory=lambda: ["predictor"])
    deployments: Names | None = Field(None, description="a predictor limited to these deployments")
    ttl_s: int = Field(30 * 24 * 3600, ge=60, le=MAX_SERVICE_TTL_S, description="the token's lifetime, seconds")


class Revoke(Body):
    token: Annotated[str, StringConstraints(max_length=8192)] | None = None
    jti: Annotated[str, StringConstraints(max_length=64)] | None = Field(None, description="a token's id (admins)")


class NewModel(Body):
    name: Name
    description: Text = ""
    labels: Annotated[dict[Annotated[str, StringConstraints(max_length=127)],
                           Annotated[str, StringConstraints(max_length=1023)]], Field(max_length=64)] = Field(
        default_factory=dict)


class Register(Body):
    store_key: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    description: Text = ""
    tags: Names | None = None


class NewDeployment(PolicyFields):
    """A deployment and, optionally, its scale policy (fields left out keep the current or default value)."""

    name: Name
    model: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    version: int | None = Field(None, ge=1, description="default: the model's latest version")
    trusted: bool = Field(False, description="load formats that run code (admin)")
    lazy: bool | None = Field(None, description="replicas load the model on its first request, not at start "
                                                "(left out: unchanged; default false)")
    load_timeout_s: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False,
                                         description="lazy replicas: how long a request waits for the model's load "
                                                     "before it gets 503 with Retry-After (left out: unchanged; "
                                                     "default 30, within the gateway's timeout)")

    def policy_change(self) -> PolicyFields:
        fields = set(PolicyFields.model_fields) & self.model_fields_set
        return PolicyFields(**{k: getattr(self, k) for k in fields})


class Experiment(Body):
    version: int = Field(ge=1, description="the candidate version")
    percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                  description="traffic share of the candidate (default 10 canary, 50 A/B)")
    sticky_header: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="requests with the same value of this header go to the same version")
    force: bool = Field(False, description="accept a version whose signature differs from the primary's")


#: Every body by its schema name in the OpenAPI document.
BODIES: dict[str, type[Body]] = {"Login": Login, "NewUser": NewUser, "NewServiceAccount": NewServiceAccount,
                                  "Revoke": Revoke, "NewModel": NewModel, "Register": Register,
                                  "ScalePolicy": PolicyFields, "NewDeployment": NewDeployment,
                                  "Experiment": Experiment}
