"""The catalog: the canonical schema, the location registry, the metric vocabulary and the source specs.

Everything here is data read from ``include/``; the code only loads, validates and looks things up.
"""
