"""`pstyle serve`: an HTTP API (FastAPI) with dynamic batching and a web page over `stylize/`."""
