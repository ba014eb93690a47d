"""The course grader: ``nox -s grade -- <stage>...`` (DESIGN §4).

The grader process never imports torch; the checks run in a child pytest process
(``grader.child_plugin`` reports from inside it).
"""
