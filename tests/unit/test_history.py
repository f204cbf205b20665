from pushdeploy import history

LINES = [
    '{"time":"2026-11-22T10:00:00Z","kind":"deploy","version":"1.0.0","previous":"none","outcome":"ok","failed_step":"","duration":12.34,"by":"local:me"}',
    "not json",
    '{"time":"2026-11-22T11:00:00Z","kind":"deploy","version":"1.1.0","previous":"1.0.0","outcome":"failed","failed_step":"migrate","duration":3,"by":"circleci:jane"}',
]


def test_history_table_shows_each_deploy_and_where_it_failed():
    lines = history.table(history.parse(LINES)).splitlines()
    assert lines[0].split() == ["time", "kind", "version", "previous", "outcome", "duration", "by", "digest"]
    assert lines[1].split() == ["2026-11-22T10:00:00Z", "deploy", "1.0.0", "none", "ok", "12.3s", "local:me"]
    assert "failed at migrate" in lines[2]


def test_empty_history():
    assert history.table([]) == "no deploys yet"
