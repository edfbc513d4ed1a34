"""The Celery tasks: thin deliveries of work units to the application layer."""
