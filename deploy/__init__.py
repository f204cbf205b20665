"""pushdeploy: push-deploy Docker Compose + Django apps over SSH with Invoke and Fabric."""
