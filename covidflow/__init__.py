"""covidflow: COVID-19 data from many publishers, normalised into one schema."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root: specs, schemas and samples are read from here, never from the CWD.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
