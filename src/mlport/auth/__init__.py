"""Authentication and authorisation of the hub: accounts, password hashing, signed access tokens and roles."""

from __future__ import annotations

from mlport.auth.http import bearer_token
from mlport.auth.passwords import check_password, generate_password, hash_password, needs_rehash, verify_password
from mlport.auth.roles import KINDS, ROLES, Action, Principal, authorize, check_deployments, check_roles
from mlport.auth.tokens import TokenConfig, TokenService, load_token_config
from mlport.auth.users import Account, UserStore, bootstrap_admin

__all__ = [
    "KINDS",
    "ROLES",
    "Account",
    "Action",
    "Principal",
    "TokenConfig",
    "TokenService",
    "UserStore",
    "authorize",
    "bearer_token",
    "bootstrap_admin",
    "check_deployments",
    "check_password",
    "check_roles",
    "generate_password",
    "hash_password",
    "load_token_config",
    "needs_rehash",
    "verify_password",
]
