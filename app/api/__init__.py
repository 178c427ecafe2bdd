"""HTTP layer: routes parse the request, call one service (app/services), shape the answer."""
