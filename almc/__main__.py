"""python -m almc: the almc command."""
from .cli import main

raise SystemExit(main())
