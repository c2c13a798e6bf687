"""``python -m autogaze_ext …``: the ``autogaze`` command line (see ``cli/``)."""

from .cli import main

raise SystemExit(main())
