"""The use cases behind the API: submitting a job, acting on it, direct uploads.

Each is a plain function over the session scope, the store and the settings. They raise the
domain errors of ``app.services.errors`` and know nothing of HTTP; ``app.api.errors`` maps
those errors to status codes, and the routes in ``app.api`` only parse, call one function and
shape the answer.
"""
