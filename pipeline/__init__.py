"""The application layer: every use-case of packsight once (submit a job, list its source,
sample a video, label clips, train, sweep). API routes, Celery tasks and CLI commands are thin
adapters around it. It may import the domain core (packsight.*) and the database layer
(packsight.models); never Celery or the web framework: publishing goes through a Publisher."""
