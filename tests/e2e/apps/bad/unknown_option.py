import tidal


@tidal.function(exposed_port=8000, keepalive=300)
def app() -> None: ...
