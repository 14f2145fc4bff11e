"""
Scripts that measure the real server and print figures: run them from the
checkout as C{python -m bench.NAME}.
"""
