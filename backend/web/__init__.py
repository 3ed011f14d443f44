"""The web page: static files served by the app (no build step, nothing fetched from elsewhere)."""
