"""Drop-folder hook: an Airflow connection in, an include.adapters.csv_folder folder out (plugins/ is on sys.path)."""
