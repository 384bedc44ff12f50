"""plugins/airflow_local_settings.py: which Airflow components preload, and that a bad preload stops them."""

import airflow_local_settings as local_settings
import pytest


@pytest.mark.parametrize("argv, forks", [
    (["/opt/venv/bin/airflow", "scheduler"], True),
    (["airflow", "celery", "worker", "--concurrency", "4"], True),
    (["/usr/lib/python3/site-packages/airflow/__main__.py", "scheduler"], True),
    (["airflow", "api-server", "--port", "8080"], False),
    (["airflow", "dag-processor"], False),
    (["airflow", "triggerer"], False),
    (["airflow", "celery", "flower"], False),
    (["airflow", "dags", "test", "scheduler"], False),
    (["/usr/bin/pytest", "scheduler"], False),
    ([], False),
])
def test_only_the_components_tasks_are_forked_from_preload(argv, forks):
    assert local_settings.forks_tasks(argv) is forks


def test_preload_imports_what_is_configured_and_fails_loudly(monkeypatch):
    monkeypatch.setenv("BRIDGE_PRELOAD_MODULES", " json , csv ,")
    assert local_settings.preload(["airflow", "scheduler"]) == ["json", "csv"]
    assert local_settings.preload(["airflow", "api-server"]) == []
    monkeypatch.setenv("BRIDGE_PRELOAD_MODULES", "")
    assert local_settings.preload(["airflow", "scheduler"]) == []
    monkeypatch.setenv("BRIDGE_PRELOAD_MODULES", "no_such_module_xyz")
    with pytest.raises(ModuleNotFoundError):
        local_settings.preload(["airflow", "scheduler"])
    monkeypatch.delenv("BRIDGE_PRELOAD_MODULES")
    assert local_settings.DEFAULT_PRELOAD == "great_expectations"
