import tidal


@tidal.function(exposed_port=8000, keep_alive=-5)
def app() -> None: ...
