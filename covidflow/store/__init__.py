"""Cassandra, the system of record: schema generation (and, later, the writers)."""
