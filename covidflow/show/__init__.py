"""The covidflow dashboard: JSON API (api.py) and Elasticsearch query building (es_queries.py)."""
