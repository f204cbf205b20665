"""pushdeploy tasks: `inv --list` shows them all, `inv --help TASK` explains one.

This file only wires the collections together; the code lives in deploy/.
"""

from invoke import Collection

from deploy.tasks import db, deploy, server

namespace = Collection(deploy.namespace, server.namespace, db.namespace)
