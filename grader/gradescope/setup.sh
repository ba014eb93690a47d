#!/usr/bin/env bash
# Gradescope autograder image setup: runs once when the autograder is built.
# The course repository is unpacked in /autograder/source (see README "Gradescope").
set -euo pipefail
apt-get update -qq && apt-get install -y -qq python3 python3-pip python3-venv >/dev/null
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install --quiet -r /autograder/source/requirements.txt
