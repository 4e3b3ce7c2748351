"""The calculation service: an HTTP API over a queue of kernel runs kept in SQLite."""
