"""Serving: one Ray Serve deployment per exit behind an SLA router.

- ``config``     ServeArgs, the validated ``args`` of a Serve config
- ``predictor``  ExitPredictor: decoded clips -> cut model -> probabilities (no Ray)
- ``replica``    ExitWorker: one exit replica's deadline-aware, length-bounded batch queue (no Ray)
- ``policy``     LoadState: latency estimates, load, failures -> which exit answers (pure)
- ``requests``   SLA headers, body types, limits, API keys -> 4xx errors (pure)
- ``router``     Router: deadlines, admission, exit calls, fallbacks, cascade (no Ray, no HTTP)
- ``api``        the FastAPI app around a Router (no Ray)
- ``app``        the deployments and ``build_app``, which serve_configs/*.yaml import
"""
