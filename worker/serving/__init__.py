"""`sync-scorer serve`: the scorer over HTTP for callers that ask for sampled scores (the provider
bridge). Pure request decoding (request.py) apart from the server (http.py) and its CLI (cli.py)."""
