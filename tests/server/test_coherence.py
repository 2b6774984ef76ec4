"""Change marks shared by forked workers: a write anywhere changes what every worker sees."""

from __future__ import annotations

import os
import threading
import time

from countersign.server.coherence import ChangeMarks


def test_a_write_changes_the_mark_and_only_its_slot() -> None:
    marks = ChangeMarks(slots=64)
    before = marks.current("a/b")
    with marks.writing("a/b"):
        new = marks.changed("a/b")
    assert new != before and marks.current("a/b") == new
    with marks.writing("a/b"):
        assert marks.changed("a/b") != new  # never the same mark twice


def test_marks_and_locks_are_shared_with_forked_workers() -> None:
    marks = ChangeMarks()
    seen = marks.current("gun")
    pid = os.fork()
    if pid == 0:  # the "other worker": writes, and dies holding the lock
        code = 0
        try:
            marks.writing("gun").__enter__()
            marks.changed("gun")
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marks.current("gun") != seen
    # the kernel released the dead worker's lock: this one is not stuck
    done = threading.Event()

    def take() -> None:
        with marks.writing("gun"):
            done.set()

    threading.Thread(target=take, daemon=True).start()
    assert done.wait(10)


def test_writers_of_one_slot_take_turns_within_a_process() -> None:
    marks = ChangeMarks(slots=1)
    inside = 0
    overlap = False

    def write() -> None:
        nonlocal inside, overlap
        with marks.writing("x"):
            inside += 1
            overlap |= inside > 1
            time.sleep(0.001)
            inside -= 1
            marks.changed("x")

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlap
