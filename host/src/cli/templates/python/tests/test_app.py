"""Tests of app.py's logic, run by `pytest` with an in-memory host."""

from cronwerk_testing import Event, TestHost

from app import Task


def test_greets_the_configuration_and_counts_its_runs():
    host = TestHost(configuration="nightly", properties={"greeting": "Hi"}, state={"runs": "41"})
    run = host.run(Task())
    assert run.ok
    assert run.message == "greeted nightly, run 42"
    assert run.events == [Event("info", "GREETING", "Hi, nightly!")]
    assert host.state["runs"] == "42"
    # The state carries over to the next run, as between runs of a configuration.
    assert host.run(Task()).message == "greeted nightly, run 43"


def test_an_empty_greeting_fails_the_run_and_stores_nothing():
    host = TestHost(properties={"greeting": " "})
    run = host.run(Task())
    assert not run.ok
    assert "property 'greeting' is empty" in run.message
    assert run.events == []
    assert host.state == {}
