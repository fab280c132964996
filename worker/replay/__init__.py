"""`sync-scorer replay`: score recorded sessions again, from the input topics Kafka retained.

- ``order``: pure - a record's media due time, the two inputs merged into live order, comparing
  replayed signals with the ones published live.
- ``engine``: the worker's own join/window and scoring stages driven by recorded records.
- ``source``: reading the recorded records (and the live signals) of chosen sessions from Kafka.
- ``cli``: the subcommand.
"""
