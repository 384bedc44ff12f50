"""The operator console inside the Airflow UI (console_plugin.py registers it; console_app.py serves it)."""
