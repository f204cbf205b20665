"""pushdeploy: push-deploy Docker Compose + Django apps over SSH with Invoke and Fabric."""

__version__ = "0.9.0"
