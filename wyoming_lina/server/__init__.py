"""Wyoming serving: the per-connection handler, ``info``, zeroconf, model downloads, CLI pieces.

Kept import-light: ``python -m wyoming_lina.server.healthcheck`` must not load torch.
"""
