"""The shell: the service, HTTP, the CLI, jobs, workers and metrics. Nothing below imports it."""
