"""The corpus holds function folders for the audit to read, not tests to run."""

collect_ignore_glob = ["corpus/*"]
