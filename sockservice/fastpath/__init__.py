"""
The modules that lean on Twisted internals for speed: a reactor without a
log context per event (directepoll, twisted#2534), writes that skip the
transport's buffer when it is empty (directwrite, twisted#5303), and a
listening port that accepts what the kernel holds before it builds any of
it (eageraccept, used by directepoll). Each says which internals it
touches; pyproject pins Twisted to the range they are tested on.
"""
