"""Operations: freshness, quality findings, failure callbacks and input safety checks shared by every DAG."""
