"""TF Serving REST routes."""

from starlette.routing import Route

routes: list[Route] = []
