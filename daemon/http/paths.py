"""Paths of the native HTTP API, shared by its routes and its OpenAPI document."""

API = "/api/v1"
# The page's files, by name, with their media types.
STATIC_FILES = {"app.js": "application/javascript", "style.css": "text/css", "index.html": "text/html"}
# Paths anyone may fetch, tokens or not: health, and the page (no data).
OPEN_PATHS = ("/", f"{API}/health")
