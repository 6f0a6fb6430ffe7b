"""The long-running service: API, authentication, live stream."""
