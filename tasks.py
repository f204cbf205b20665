"""pushdeploy tasks: `inv --list` shows them all, `inv --help TASK` explains one.

This repository's own project file, as a team's would be: the code lives in pushdeploy/.
"""

from pushdeploy.tasks import namespace  # noqa: F401  (inv finds the collection by this name)
