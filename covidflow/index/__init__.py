"""Elasticsearch, for search and dashboards: the index template generated from the canonical schema."""
