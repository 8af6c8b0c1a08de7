"""Terminal keys v/p/s/q, read from a pseudo-terminal; never read when stdin is not a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runforge.run.keys import NO_KEYS_VARIABLES, KeyReader, keys_wanted


# Runs in a child whose stdin and controlling terminal is a pseudo-terminal, as a trainer in a shell is.
CHILD = r"""
import fcntl, json, sys, termios, time
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
from runforge.run.keys import KeyReader
paused = [False]
reader = KeyReader(lambda: paused[0])
before = termios.tcgetattr(0)
started = reader.start()
mode = termios.tcgetattr(0)
print(json.dumps({"started": started, "cbreak": not mode[3] & termios.ICANON and not mode[3] & termios.ECHO,
                  "isig": bool(mode[3] & termios.ISIG)}), flush=True)
for batch in range(3):
    got, deadline = [], time.monotonic() + 10
    want = [3, 2, 2][batch]
    while len(got) < want and time.monotonic() < deadline:
        got += reader.take()
        time.sleep(0.01)
    paused[0] = batch == 1  # the trainer paused after the second batch (set before the parent types on)
    print(json.dumps(got), flush=True)
reader.stop()
print(json.dumps({"restored": termios.tcgetattr(0) == before, "active": reader.active}), flush=True)
"""


def test_keys_become_commands_and_the_terminal_is_restored():
    leader, follower = os.openpty()
    env = {k: v for k, v in os.environ.items() if k not in NO_KEYS_VARIABLES}
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=follower, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    os.close(follower)
    try:
        state = json.loads(child.stdout.readline() or "{}")
        assert state == {"started": True, "cbreak": True, "isig": True}, child.stderr.read()
        os.write(leader, b"vxsP")  # unknown keys are ignored, capitals count
        assert json.loads(child.stdout.readline()) == ["validate", "save", "pause"]
        os.write(leader, b"pp")  # two presses before the trainer looks: pause, then resume
        assert json.loads(child.stdout.readline()) == ["pause", "resume"]
        os.write(leader, b"pq")  # the run is paused now: p resumes it
        assert json.loads(child.stdout.readline()) == ["resume", "stop"]
        assert json.loads(child.stdout.readline()) == {"restored": True, "active": False}
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
        os.close(leader)


def test_no_keys_without_a_terminal_or_under_ci(monkeypatch):
    reader = KeyReader(lambda: False)
    assert reader.start() is False and not reader.active  # pytest's stdin is not a terminal
    monkeypatch.setenv("CI", "true")
    assert keys_wanted() is False
    # a child process with a pipe as stdin never touches it
    code = "from runforge.run.keys import KeyReader; print(KeyReader(lambda: False).start())"
    out = subprocess.run([sys.executable, "-c", code], input="v", capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "False"
