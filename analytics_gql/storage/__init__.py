"""Storage: tables, engine, dialect differences, ingest (write), queries (read), rollups (write, never commits)."""
