# A script written as fal's documentation writes one: plain functions, called from
# the script itself, run on a runner. Nothing here is adapted to tidal.
import sys

import fal


@fal.function(machine_type="XS", keep_alive=60)
def add(a, b, combine=None):
    print(f"adding {a!r} and {b!r} on a runner")
    combine = combine or (lambda x, y: x + y)
    return {"sum": combine(a, b), "python": sys.version_info[:2]}


class NotAllowed(Exception):
    pass


@fal.function(machine_type="XS", keep_alive=60)
def check(value):
    print("checking", value)
    if value < 0:
        raise NotAllowed(f"{value} is negative")
    return value


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "add":
        print("result:", add(2, 3))
        print("closure:", add([1], [2], combine=lambda x, y: y + x))
    elif what == "fail":
        try:
            check(-4)
        except NotAllowed as exc:
            import traceback

            print("caught:", type(exc).__name__, exc)
            print("cause:", "".join(traceback.format_exception(exc.__cause__)))
    elif what == "queue":
        handle = check.submit(7)
        print("queued:", handle.request_id)
        print("queued result:", handle.result(timeout=60))
