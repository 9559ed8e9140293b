"""The Serving Hub: model registry, users and tokens, deployments, their controller and gateway."""
