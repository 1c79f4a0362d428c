import tidal


@tidal.function(exposed_port=8000, regions=["eu-west"])
def app() -> None: ...
