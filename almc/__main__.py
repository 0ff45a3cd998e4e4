"""python -m almc: the almc command."""
from .cli import entry

entry()
