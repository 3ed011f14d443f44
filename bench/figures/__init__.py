"""One module per figure; each returns the figures it measured."""
