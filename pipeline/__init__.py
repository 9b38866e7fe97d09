"""The tamis engine: job spec, readers and writers, the Ray runner, reports and the CLI."""
