class SourceError(RuntimeError):
    """The source could not deliver the rows asked for; the message says why and what to do."""
