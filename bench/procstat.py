"""
What a process holds, read from /proc (Linux): resident memory and open
file descriptors, the figures the soak and slow-consumer runs report.
"""

import os


def residentBytes(pid):
    """
    The resident set size of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def cpuTimes(pid):
    """
    The CPU time process C{pid} has used so far, in user space and in the
    kernel, in seconds.
    """
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpuSeconds(pid):
    """
    The CPU time (user and system) process C{pid} has used so far.
    """
    return sum(cpuTimes(pid))


def openDescriptors(pid):
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def mebibytes(size):
    return f"{size / 2**20:.1f} MiB"


def describeDescriptors(pid):
    """
    What each open descriptor of process C{pid} points at.
    """
    path = f"/proc/{pid}/fd"
    return sorted(os.readlink(f"{path}/{fd}") for fd in os.listdir(path))
