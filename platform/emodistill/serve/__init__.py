"""Serving: one Ray Serve deployment per exit behind an SLA router.

- ``config``     ServeArgs, the validated ``args`` of a Serve config
- ``predictor``  ExitPredictor: decode -> cut model -> probabilities (no Ray)
- ``policy``     which exit answers: pure functions of profile, budget and load
- ``requests``   SLA headers, body types, limits, API keys -> 4xx errors (pure)
- ``router``     Router + the FastAPI app (no Ray)
- ``app``        the deployments and ``build_app``, which serve_configs/*.yaml import
"""
