"""`python -m salesflow.cli ...`: how `salesflow up` starts its children."""

from salesflow.cli import main

main()
