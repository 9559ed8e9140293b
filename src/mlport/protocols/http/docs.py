"""OpenAPI description and docs page."""

from starlette.routing import Route

routes: list[Route] = []
