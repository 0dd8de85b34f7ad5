"""One sync at a time across processes sharing a store: SQLite's lock file here, PostgreSQL in test_postgres.py."""

from conftest import bearer, request, runs_of, served, service_env, wait_for
from test_e2e import start_service


def test_a_cli_sync_while_the_web_service_syncs_exits_1_without_overlap(make_app, tandem, nightscout, tmp_path):
    tandem.pump_log_secs = 60.0  # held until the CLI has answered (a busy machine starts it slowly)
    app, _ = make_app()
    with served(app) as address:
        assert request(address, "POST", "/run", bearer())[0] == 202
        wait_for(lambda: tandem.pump_logs_in_flight == 1)
        cli = start_service(tandem, service_env(tandem, nightscout, tmp_path / "tcsync.sqlite3"), "sync")
        _, err = cli.communicate(timeout=60)
        tandem.release()
        assert (cli.returncode, err) == (1, "tcsync_wsgi: not started: a sync is already running\n")
        wait_for(lambda: runs_of(address)[0]["outcome"] == "ok")
        assert [r["trigger"] for r in runs_of(address)] == ["run"]  # the refused CLI recorded nothing
    assert tandem.most_pump_logs_in_flight == 1
    assert len(nightscout.treatments) == 2


def test_a_web_trigger_while_a_cli_sync_runs_is_busy(make_app, tandem, nightscout, tmp_path):
    tandem.pump_log_secs = 60.0  # Tandem holds the CLI's sync until the web has been refused
    cli = start_service(tandem, service_env(tandem, nightscout, tmp_path / "tcsync.sqlite3"), "sync")
    try:
        wait_for(lambda: tandem.pump_logs_in_flight == 1, timeout=30)
        app, _ = make_app()
        with served(app) as address:
            status, _, body = request(address, "POST", "/run", bearer())
            assert (status, body) == (202, b'{"started": false, "reason": "a sync is already running", "run_id": null}')
            assert request(address, "POST", "/update", bearer())[0] == 409
            assert runs_of(address)[0]["outcome"] == "running"  # the CLI's run, not marked interrupted
            tandem.release()
            out, _ = cli.communicate(timeout=60)
            assert cli.returncode == 0 and "sync ok: uploaded 2" in out
            wait_for(lambda: runs_of(address)[0]["outcome"] == "ok", timeout=5)  # read from the store
    finally:
        cli.kill()
    assert tandem.most_pump_logs_in_flight == 1


def test_a_sync_killed_with_sigkill_does_not_block_the_next(make_app, tandem, nightscout, tmp_path):
    tandem.pump_log_secs = 30.0
    cli = start_service(tandem, service_env(tandem, nightscout, tmp_path / "tcsync.sqlite3"), "sync")
    try:
        wait_for(lambda: tandem.pump_logs_in_flight == 1, timeout=30)
    finally:
        cli.kill()  # SIGKILL: no cleanup of any kind
        cli.wait(10)
    tandem.pump_log_secs = 0.0
    app, _ = make_app()
    [killed] = app.store.runs(10)
    assert (killed["trigger"], killed["outcome"]) == ("cli", "interrupted")
    run, why_not = app.syncer.start("run")
    assert why_not is None and run.done.wait(30)
    assert (run.outcome, run.uploaded) == ("ok", 2)
