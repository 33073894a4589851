"""The pooled randomness behind tags, Call-IDs, icids and service tokens."""

from __future__ import annotations

import os
import unittest

from imsp2pd.sip.message import _EntropyPool, new_call_id, new_tag, random_hex


class EntropyPoolTests(unittest.TestCase):
    def test_lengths_and_hex(self) -> None:
        for n in (1, 6, 8, 16, 5000):
            value = random_hex(n)
            self.assertEqual(len(value), 2 * n)
            int(value, 16)
        self.assertEqual(len(new_tag()), 12)
        self.assertTrue(new_call_id("h").endswith("@h"))

    def test_values_do_not_repeat_across_refills(self) -> None:
        pool = _EntropyPool(size=64)  # a refill every 8 values of 8 bytes
        seen = {pool.hex(8) for _ in range(10_000)}
        self.assertEqual(len(seen), 10_000)

    def test_draws_consume_the_pool_without_overlap(self) -> None:
        pool = _EntropyPool(size=32)
        first = pool.hex(16)
        second = pool.hex(16)
        self.assertEqual(bytes.fromhex(first + second), pool._buf)
        third = pool.hex(1)  # past the end: a fresh buffer
        self.assertEqual(bytes.fromhex(third), pool._buf[:1])

    def test_forked_child_does_not_reuse_the_parents_bytes(self) -> None:
        random_hex(1)  # the pool now holds bytes the child must not reuse
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read)
            os.write(write, random_hex(16).encode())
            os._exit(0)
        os.close(write)
        child = os.read(read, 64).decode()
        os.close(read)
        os.waitpid(pid, 0)
        self.assertNotEqual(child, random_hex(16))
        self.assertEqual(len(child), 32)
