"""Uploads: input pictures a client sends before naming them in a job's `inputImages`."""
