"""The ``make demo`` pipeline: sample documents, one nightly run on the local backend, checked output."""
