"""The `packsight` command: one module per command group, each command a thin adapter that
parses its arguments, calls one use-case of the application layer and prints the outcome."""
