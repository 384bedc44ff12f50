"""DAG building blocks shared by the flows' DAG files."""
