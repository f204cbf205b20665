"""The Invoke task collections, wired together as `namespace`.

A project's own tasks.py is two lines:

    from pushdeploy.tasks import namespace  # noqa: F401  (inv finds it by this name)

or none: `pushdeploy` runs the same tasks as a program of its own (pushdeploy/cli.py).
"""

from invoke import Collection

from pushdeploy.tasks import config, cron, db, deploy, pull, review, secrets, server
from pushdeploy.tasks.init import init
from pushdeploy.tasks.manage import manage

deploy.namespace.add_task(pull.pull_status)
namespace = Collection(deploy.namespace, server.namespace, db.namespace)
namespace.add_task(manage)
namespace.add_task(init)
namespace.add_collection(review.namespace)
namespace.add_collection(config.namespace)
namespace.add_collection(secrets.namespace)
namespace.add_collection(cron.namespace)
