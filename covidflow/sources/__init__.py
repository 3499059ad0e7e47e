"""Python hooks for the few sources a declarative spec cannot describe (referenced by dotted name)."""
