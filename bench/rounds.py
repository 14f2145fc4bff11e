"""
The order in which a benchmark's round measures what it compares.
"""


def roundOrder(names, number):
    """
    The order of C{names} (servers, or kinds of client) in round C{number}:
    as given in even rounds, reversed in odd ones, so none always runs first
    or last (what runs right after another pays for what that one left in
    the caches and the scheduler: about 2% here).
    """
    return names if number % 2 == 0 else names[::-1]
