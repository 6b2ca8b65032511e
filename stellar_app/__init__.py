"""The application: the `stellar` command line, the main job (demo and replay) and `stellar ingest`.

It imports the code location (stellar_assets.definitions) and runs its jobs; the
code location never imports it.
"""
