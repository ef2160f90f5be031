def run_key(phase, day):
    """The document id of one phase of one day."""
    return f"{phase}-{day}"
