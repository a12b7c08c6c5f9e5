"""Claims and fingerprints: one holder per unit, stale claims taken over, settings differences named."""

import json
import os
import subprocess
import sys
import threading

from jaxbrain import claims, identity, results


def test_one_holder_and_release(tmp_path):
    first, second = claims.Claim(tmp_path / "u.claim"), claims.Claim(tmp_path / "u.claim")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert second.holder()["pid"] == os.getpid()
    first.release()
    assert not (tmp_path / "u.claim").exists()
    assert second.try_acquire()
    second.release()


def test_a_dead_holder_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"host": __import__("socket").gethostname(), "pid": int(dead.stdout), "token": "x", "since": 0}
    (tmp_path / "u.claim").write_text(json.dumps(record))
    claim = claims.Claim(tmp_path / "u.claim")
    assert claim.is_stale() and claim.try_acquire()
    claim.release()


def test_an_old_heartbeat_from_another_host_is_stale(tmp_path):
    (tmp_path / "u.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x", "since": 0}))
    os.utime(tmp_path / "u.claim", (0, 0))
    assert claims.Claim(tmp_path / "u.claim", stale_after=60).is_stale()
    os.utime(tmp_path / "u.claim")
    assert not claims.Claim(tmp_path / "u.claim", stale_after=60).is_stale()


def test_do_units_runs_each_unit_once_across_threads(tmp_path):
    done, counts = set(), {k: 0 for k in "abcd"}
    lock = threading.Lock()

    def work(k):
        with lock:
            counts[k] += 1
        done.add(k)

    units = [(k, tmp_path / f"{k}.claim", lambda k=k: k in done, lambda k=k: work(k)) for k in counts]
    threads = [threading.Thread(target=claims.do_units, args=(units,), kwargs={"poll": 0.01}) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {k: 1 for k in counts}


def test_fingerprints_ignore_key_order_and_name_differences():
    a = {"cv": {"n_splits": 5, "shuffle": False}, "alphas": (1.0, 10.0)}
    b = {"alphas": [1.0, 10.0], "cv": {"shuffle": False, "n_splits": 5}}
    assert identity.fingerprint(a) == identity.fingerprint(b)
    assert identity.differences(a, {**a, "cv": {"n_splits": 3, "shuffle": False}}) == {"cv.n_splits": (5, 3)}


def test_digests_are_cached_by_size_and_time(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    cache = identity.DigestCache(tmp_path / "digests.json")
    first = cache.digest(path)
    assert identity.DigestCache(tmp_path / "digests.json").digest(path) == first
    path.write_bytes(b"abcd")
    assert cache.digest(path) != first


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    mine = tmp_path / (results.temporary_prefix(tmp_path / "a.csv") + "x1.tmp")
    host = __import__("socket").gethostname()
    leftover = tmp_path / "sub" / f".a.csv.{host}.{dead}.x2.tmp"
    leftover.parent.mkdir()
    mine.write_text("")
    leftover.write_text("")
    assert results.remove_stale_temporaries(tmp_path) == [leftover]
    assert mine.exists()
