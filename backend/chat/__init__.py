"""The chat assistant: conversations that recommend generation options and run them as jobs."""
