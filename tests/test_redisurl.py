"""
The --backplane URL.
"""

from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.redisurl import RedisAddress, parseRedisURL


class ParseRedisURLTests(SynchronousTestCase):
    def test_hostAndPort(self):
        self.assertEqual(parseRedisURL("redis://10.0.0.5:6380"), RedisAddress("10.0.0.5", 6380))
        self.assertEqual(parseRedisURL("redis://redis.internal"), RedisAddress("redis.internal", 6379))

    def test_passwordAndDatabase(self):
        address = parseRedisURL("redis://:s%40cr%3At@127.0.0.1:6379/2")
        self.assertEqual(address, RedisAddress("127.0.0.1", 6379, "s@cr:t", None, 2))
        self.assertEqual(str(address), "redis://127.0.0.1:6379/2")

    def test_userAndTLS(self):
        address = parseRedisURL("rediss://relay:pw@[::1]:6390")
        self.assertEqual(address, RedisAddress("::1", 6390, "pw", "relay", None, True))
        self.assertEqual(str(address), "rediss://[::1]:6390")

    def test_bad(self):
        for url, problem in [
            ("http://127.0.0.1:6379", "--backplane must be a redis:// or rediss:// URL, "
             "such as redis://:PASSWORD@127.0.0.1:6379/0"),
            ("127.0.0.1:6379", "--backplane must be a redis:// or rediss:// URL, "
             "such as redis://:PASSWORD@127.0.0.1:6379/0"),
            ("redis://:6379", "--backplane URL has no host"),
            ("redis://h:port", "--backplane: Port could not be cast to integer value as 'port'"),
            ("redis://h:99999", "--backplane: Port out of range 0-65535"),
            ("redis://h/zero", "--backplane database must be a number, not 'zero'"),
            ("redis://h/0?timeout=1", "--backplane URL takes no ?query or #fragment"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseRedisURL(url)
            self.assertEqual(str(caught.exception), problem)
