"""Serving: one Ray Serve deployment per exit behind an SLA router.

- ``config``     ServeArgs, the validated ``args`` of a Serve config
- ``predictor``  ExitPredictor: decoded clips -> cut model -> probabilities (no Ray)
- ``replica``    ExitWorker: one exit replica's deadline-aware, length-bounded batch queue (no Ray)
- ``policy``     LoadState: latency estimates, load, failures -> which exit answers (pure)
- ``requests``   SLA headers, body types, limits, multipart, request ids -> 4xx errors (pure)
- ``decoding``   request bodies -> clips on bounded thread pools, off the event loop
- ``router``     Router: deadlines, admission, exit calls, fallbacks, cascade (no Ray, no HTTP)
- ``api``        the FastAPI app: routes, body reading, error model, OpenAPI (no Ray)
- ``hostile``    hostile payloads and raw clients for the tests and bench/serve_hostile.py
- ``app``        the deployments and ``build_app``, which serve_configs/*.yaml import
"""
