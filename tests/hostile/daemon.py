# AT IMPORT: leave a daemon behind that rewrites a result file after the grader has finished.
import os as _os
import time as _time

if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        _time.sleep(4)
        with open("MARKER", "w") as _f:
            _f.write("the daemon outlived the grader")
    _os._exit(0)
