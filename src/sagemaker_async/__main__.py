"""``python -m sagemaker_async``: the ``sagemaker-async`` command."""

import sys

from ._cli import main

sys.exit(main())
