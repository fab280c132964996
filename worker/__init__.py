"""sync-scorer: streaming lip-sync scoring (worker, scoring core, CLI)."""

__version__ = "0.1.0"
