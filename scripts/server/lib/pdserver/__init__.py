"""pushdeploy's server side, in Python (standard library only, Python 3.8+).

Run as root by bin/deploy (``python3 -I``) from root-owned files under
/opt/pushdeploy; the client loads the shared modules (facts) from here too, so
both sides read one copy. Modules, one concern each:

  facts.py    what client and server agree on (read from lib/protocol.sh)
  request.py  a request's words checked into a Request, or refused (pure)
  keys.py     what each deploy key may ask for (pure)
  conf.py     reading an environment's settings, /etc/pushdeploy/ENV.conf
  guard.py    the refusals that read the server: templates, review targets, key scopes
  verbs.py    the verbs answered here; the rest still run in lib/deploy.sh (bash)
  main.py     bin/deploy: check, refuse or answer, else hand over to lib/deploy.sh
"""
