"""The Truto tool layer: client, catalog, validation, pacing, guards.

Nothing here knows about graphs or the CLI; graphs and the CLI import from here.
"""
