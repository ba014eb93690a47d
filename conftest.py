# The course's fixtures and markers (impl, setting, points) for every pytest run here.
pytest_plugins = ["shared.pytest_plugin"]
