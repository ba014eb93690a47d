"""Hostile learner files for stage 1.1 (see tests/test_hostile.py).

Each file is either a whole learner file, or code that ``tests/test_hostile.py`` puts into a copy
of the reference at import time (``# AT IMPORT``) — written the way a submission that games the
grader would be, not tuned to the grader's internals beyond what its README says.
"""
