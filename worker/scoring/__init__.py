"""The scoring core: imports torch, torchaudio and numpy only (no Kafka, no HTTP)."""
