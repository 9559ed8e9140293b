"""Hub client commands for identities: ``mlport login``, ``logout``, ``whoami``, ``token``, ``users`` and
``service-accounts``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from mlport.cli.hubclient import (
    EXIT_USAGE,
    Fail,
    add_parser,
    call,
    forget,
    print_out,
    save,
    saved,
    token_of,
    url_of,
)

__all__ = ["add_auth_commands"]


def _password(args: argparse.Namespace, prompt: str, *, env: str | None) -> str:
    """From stdin (``--password-stdin``), the environment variable ``env``, or a prompt on the terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise Fail("--password-stdin: standard input gave no password", EXIT_USAGE)
        return password
    if env and os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        hint = f", or set {env}" if env else ""
        raise Fail(f"no terminal to ask for the password: pass it on standard input with --password-stdin "
                   f"(e.g. `echo \"$PASSWORD\" | mlport {args.command} --password-stdin ...`){hint}", EXIT_USAGE)
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise Fail("no password given", EXIT_USAGE) from None


def _login(args: argparse.Namespace) -> int:
    password = _password(args, f"password for {args.username}: ", env="MLPORT_HUB_PASSWORD")
    data = call(args, "POST", "/auth/token", auth=False, json={"username": args.username, "password": password})
    path = save(url_of(args), data["access_token"])
    shown = dict(data) if args.show_token else {k: v for k, v in data.items() if k != "access_token"}
    print_out(args, {**shown, "url": url_of(args), "saved_to": str(path)},
              f"logged in to {url_of(args)} as {args.username} ({', '.join(data.get('roles', []))}); token in {path}, "
              f"valid {data['expires_in']} s")
    return 0


def _logout(args: argparse.Namespace) -> int:
    """Revoke the saved token at the hub (best effort: it may have expired) and forget it."""
    token = saved().get("token")
    revoked = False
    if token:
        try:
            call(args, "POST", "/api/v1/tokens/revoke", json={"token": token})
            revoked = True
        except Fail as exc:
            print(f"mlport: the hub did not revoke the token ({exc}); forgetting it anyway", file=sys.stderr)
    path = forget()
    print_out(args, {"revoked": revoked, "forgot": str(path) if path else None},
              f"logged out of {url_of(args)}" + ("" if path else " (no saved login)"))
    return 0


def _whoami(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/api/v1/whoami")
    scope = f"; deployments {', '.join(data['deployments'])}" if data.get("deployments") is not None else ""
    print_out(args, {**data, "url": url_of(args)},
              f"{data['subject']} ({data['kind']}) at {url_of(args)}: {', '.join(data['roles']) or 'no roles'}{scope}")
    return 0


def _token(args: argparse.Namespace) -> int:
    if args.action == "show":
        token = token_of(args)
        print_out(args, {"access_token": token, "url": url_of(args)}, token)
        return 0
    body = {"jti": args.jti} if args.jti else {"token": args.revoke_token or token_of(args)}
    data = call(args, "POST", "/api/v1/tokens/revoke", json=body)
    print_out(args, data, f"revoked token {data['revoked']}")
    return 0


def _users(args: argparse.Namespace) -> int:
    if args.action == "list":
        data = call(args, "GET", "/api/v1/users")
        lines = []
        for u in data["users"]:
            scope = f"  deployments: {', '.join(u['deployments'])}" if u.get("deployments") else ""
            state = "  (disabled)" if u.get("disabled") else ""
            lines.append(f"{u['name']:24} {u.get('kind', 'user'):8} {', '.join(u.get('roles') or [])}{scope}{state}")
        print_out(args, data, "\n".join(lines) or "no users")
        return 0
    if not args.name:
        raise Fail(f"`mlport users {args.action}` needs a user name", EXIT_USAGE)
    if args.action == "delete":
        call(args, "DELETE", f"/api/v1/users/{args.name}")
        print_out(args, {}, f"deleted user {args.name}")
        return 0
    password = _password(args, f"password for the new user {args.name}: ", env=None)
    body: dict[str, Any] = {"name": args.name, "password": password, "roles": args.role or []}
    if args.deployment:
        body["deployments"] = args.deployment
    data = call(args, "POST", "/api/v1/users", json=body)
    print_out(args, data, f"created user {data['name']} ({', '.join(args.role or []) or 'no roles'})")
    return 0


def _service_accounts(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "roles": args.role or ["predictor"]}
    if args.deployment:
        body["deployments"] = args.deployment
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    data = call(args, "POST", "/api/v1/service-accounts", json=body)
    print_out(args, data, data["access_token"])
    if args.output != "json":
        print(f"created service account {data['name']}; the token above is shown once, valid {data['expires_in']} s "
              f"(id {data['jti']})", file=sys.stderr)
    return 0


def _roles_and_scope(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", action="append", help="a role (admin, deployer, predictor, viewer...); repeat for more")
    p.add_argument("--deployment", action="append", help="limit the account to this deployment; repeat for more")


def add_auth_commands(sub: Any) -> None:
    p = add_parser(sub, "login", "log in to a hub and keep the token (~/.config/mlport/hub.json, mode 0600)", """
mlport login --hub http://127.0.0.1:8090 -u admin            # asks for the password
echo "$PASSWORD" | mlport login -u ci --password-stdin       # in scripts
MLPORT_HUB_PASSWORD=... mlport login -u admin -o json --show-token""", _login)
    p.add_argument("--username", "-u", default="admin", help="user name (default admin)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (else MLPORT_HUB_PASSWORD, else a prompt)")
    p.add_argument("--show-token", action="store_true", help="with -o json: include the token in the output")

    add_parser(sub, "logout", "revoke the saved token and forget the login", "mlport logout", _logout)
    add_parser(sub, "whoami", "show who the saved login (or --token) is, and its roles", """
mlport whoami
mlport whoami -o json""", _whoami)

    p = add_parser(sub, "token", "print the saved token (for scripts), or revoke a token", """
TOKEN=$(mlport token)                      # curl -H "authorization: Bearer $TOKEN" ...
mlport token revoke                        # the saved token
mlport token revoke --jti 6c1f...          # any token by its id (admin)""", _token)
    p.add_argument("action", nargs="?", choices=["show", "revoke"], default="show", help="what to do (default show)")
    p.add_argument("--jti", help="revoke: the id of the token to revoke (admin)")
    p.add_argument("--revoke-token", help="revoke: this token instead of the saved one")

    p = add_parser(sub, "users", "list, create or delete the hub's users (admin)", """
mlport users list
echo "$PASSWORD" | mlport users create alice --role deployer --password-stdin
mlport users create bob --role predictor --deployment iris-prod     # asks for the password
mlport users delete bob""", _users)
    p.add_argument("action", choices=["list", "create", "delete"], help="what to do")
    p.add_argument("name", nargs="?", help="user name (create, delete)")
    p.add_argument("--password-stdin", action="store_true", help="create: read the password from standard input")
    _roles_and_scope(p)

    p = add_parser(sub, "service-accounts", "create a service account and print its token, once (admin)", """
mlport service-accounts create ci-scorer --role predictor --deployment iris-prod --ttl 2592000""",
                   _service_accounts)
    p.add_argument("action", choices=["create"], help="what to do")
    p.add_argument("name", help="account name")
    _roles_and_scope(p)
    p.add_argument("--ttl", type=int, help="token lifetime, seconds (default 30 days)")
