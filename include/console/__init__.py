"""The operator console (plugins/bridge_console serves it inside the Airflow UI): what each run did, what is
stuck, and the actions that fix it. Plain functions over the bridge DB, read through the `bridge_console` role;
the plugin decides who may see which flow (Airflow's auth manager) and hands in only those flows."""
