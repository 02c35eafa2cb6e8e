"""The service shell: CLI, settings, Prometheus source, Kubernetes actuator, loop, REST API."""
