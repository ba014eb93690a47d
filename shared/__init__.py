"""The course's common package: stage registry, loader, test helpers, device matrix.

Importing ``shared`` (or ``shared.registry`` / ``shared.loader``) never imports torch;
only ``shared.testing`` and ``shared.matrix`` do, and only the graded child process
uses them.
"""
