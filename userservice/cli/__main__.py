"""`python -m userservice.cli`: the `userservice` command."""
from . import main

main()
