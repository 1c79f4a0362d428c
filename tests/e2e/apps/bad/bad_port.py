import tidal


@tidal.function(exposed_port=70000)
def app() -> None: ...
