# AT IMPORT: skip every check "for a missing device" (the rest of the file is the untouched skeleton).
import pytest as _pytest

_pytest.skip("no CUDA device", allow_module_level=True)
