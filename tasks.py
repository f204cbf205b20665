"""pushdeploy tasks: `inv --list` shows them all, `inv --help TASK` explains one.

This file only wires the collections together; the code lives in deploy/.
"""

from invoke import Collection

from deploy.tasks import db, deploy, pull, review, server
from deploy.tasks.manage import manage

deploy.namespace.add_task(pull.pull_status)
namespace = Collection(deploy.namespace, server.namespace, db.namespace)
namespace.add_task(manage)
namespace.add_collection(review.namespace)
