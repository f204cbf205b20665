"""`python -m pushdeploy`: the same program as `pushdeploy`."""

from pushdeploy.cli import main

main()
