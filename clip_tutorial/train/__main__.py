"""``python -m clip_tutorial.train`` (or ``torchrun ... -m clip_tutorial.train``): the command line."""
from clip_tutorial.cli import main

raise SystemExit(main())
