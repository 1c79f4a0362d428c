import tidal


@tidal.function(exposed_port=8000, requirements=["pydantic==1.10.13"])
def conflicting() -> None: ...


@tidal.function(exposed_port=8000, requirements=["tidal-no-such-package-anywhere==1.0"])
def unresolvable() -> None: ...


@tidal.function(exposed_port=8000, python_version="3.99")
def missing_python() -> None: ...


@tidal.function(exposed_port=8000, local_python_modules=["no_such_local_module"])
def missing_module() -> None: ...
