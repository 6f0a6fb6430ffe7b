"""Allow ``python -m flowhawk``."""

from flowhawk.cli import main

main()
