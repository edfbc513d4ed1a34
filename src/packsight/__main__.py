"""`python -m packsight …`: the `packsight` command, for an environment without its script."""

from packsight.cli.main import main

main()
