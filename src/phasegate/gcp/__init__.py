"""Running phasegate on Google Cloud: the Cloud Functions (2nd gen) entry point."""
