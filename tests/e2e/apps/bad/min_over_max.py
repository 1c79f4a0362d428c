import tidal


@tidal.function(exposed_port=8000, min_concurrency=4, max_concurrency=2)
def app() -> None: ...
